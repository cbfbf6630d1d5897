"""torch.distributed for pretraining, launched with ``torchrun`` (gloo on CPU, NCCL on GPU).

Every rank draws the same global batch (the iterator is a function of (seed, epoch)) and keeps its
``1/W`` slice — the sharding a DistributedSampler gives, without a per-sample DataLoader. Gradients are
averaged across ranks after backward, which is what DDP does; objectives with in-batch negatives or
batch statistics gather across ranks with gradients (``mmssl.objectives.distributed.gather``), so one step
at world size W equals one step at world size 1 on the same global batch. Only rank 0 logs, evaluates and
writes checkpoints; every rank's RNG state is saved so a resumed run continues exactly.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from mmssl.errors import ConfigError
from mmssl.objectives.distributed import rank, world_size
from mmssl.types import Batch

__all__ = ["init_from_env", "shard", "average_gradients", "broadcast_parameters", "gather_objects", "rank",
           "world_size"]


def init_from_env(device: torch.device) -> tuple[int, int]:
    """Join the process group described by torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR …)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
    return rank(), world_size()


def shard(batch: Batch, rank_: int, world: int) -> Batch:
    """This rank's contiguous ``1/world`` slice of a global batch."""
    if world == 1:
        return batch
    n = batch.size
    if n % world:
        raise ConfigError(f"data.batch_size={n} is not divisible by the world size {world}; pick a multiple")
    per = n // world
    part = slice(rank_ * per, (rank_ + 1) * per)
    return Batch({k: v[part] for k, v in batch.data.items()}, None if batch.labels is None else batch.labels[part],
                 {k: v[part] if torch.is_tensor(v) else v for k, v in batch.extra.items()})


def average_gradients(params: list[torch.nn.Parameter]) -> None:
    """All-reduce and average gradients in one flat buffer (DDP's arithmetic without its bucketing)."""
    if world_size() == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    flat = torch.cat([g.flatten() for g in grads])
    dist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def broadcast_parameters(module: torch.nn.Module) -> None:
    """Start every rank from rank 0's parameters and buffers."""
    if world_size() == 1:
        return
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, src=0)


def gather_objects(obj) -> list:
    """Every rank's ``obj`` (e.g. RNG states), in rank order."""
    if world_size() == 1:
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out
