"""Rank, world size and differentiable cross-rank gathering (objectives with in-batch negatives or batch
statistics, the trainer and PPO use these; no process group → rank 0 of 1).

``gather(x)`` concatenates ``x`` from every rank along dim 0 *with gradients* (through
``torch.distributed.nn``), so a loss over the gathered batch at world size W has the same value and
gradients as the loss at world size 1 on the same global batch. Without an initialised process group
it returns ``x`` unchanged.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def gather(x: torch.Tensor) -> torch.Tensor:
    """(B, ...) on each rank → (W·B, ...) in rank order, differentiable."""
    if world_size() == 1:
        return x
    from torch.distributed import _functional_collectives as fc

    gather_ = getattr(fc, "all_gather_single_autograd", None) or fc.all_gather_tensor_autograd  # renamed in torch 2.14
    return fc.wait_tensor(gather_(x.contiguous(), gather_dim=0, group=dist.group.WORLD))
