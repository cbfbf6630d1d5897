"""torch.distributed for pretraining and PPO, launched with ``torchrun`` (env:// init; gloo on CPU, NCCL on GPU).

Every rank draws the same global batch (the iterator is a function of (seed, epoch)) and keeps its
``1/W`` slice — the sharding a DistributedSampler gives, without a per-sample DataLoader. The model is
wrapped by ``wrap``: torch's ``DistributedDataParallel`` (``trainer.distributed=ddp``: gradients
all-reduced in buckets, overlapped with backward, averaged over ranks) or FSDP2's ``fully_shard``
(``fsdp``: parameters, gradients and optimiser state sharded, each encoder tower its own unit).
Objectives with in-batch negatives or batch statistics gather across ranks with gradients
(``mmssl.collectives.gather``) and compute their own rows, so one step at world size W
equals one step at world size 1 on the same global batch. Only rank 0 logs, evaluates and writes
checkpoints; every rank's RNG state is saved so a resumed run continues exactly.

    torchrun --standalone --nproc_per_node=2 -m mmssl.cli pretrain run_dir=runs/ddp device=cpu
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import nn

from mmssl.collectives import rank, world_size
from mmssl.errors import ConfigError
from mmssl.types import Batch

__all__ = ["init_from_env", "shard", "wrap", "full_state_dict", "load_full_state_dict", "all_finite", "mean_over_ranks",
           "average_parameters", "broadcast_parameters", "gather_objects", "STRATEGIES"]

#: values of ``trainer.distributed``
STRATEGIES = ("ddp", "fsdp")


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


def wrap(model: nn.Module, device: torch.device, strategy: str = "ddp", sync_batchnorm: bool = False,
         find_unused_parameters: bool = False, shard_units: Iterable[nn.Module] = ()) -> nn.Module:
    """The module to run forward/backward through at world size > 1 (``model`` itself at world size 1).

    ``ddp``: ``DistributedDataParallel`` (bucketed all-reduce overlapped with backward; it broadcasts rank
    0's parameters and buffers at construction). ``forward_sync_buffers=False`` keeps per-rank buffers
    afterwards (BatchNorm statistics are per rank unless ``sync_batchnorm``; momentum encoders and queues
    are updated identically on every rank anyway). ``fsdp``: FSDP2 ``fully_shard`` on each of ``shard_units`` (the
    encoder towers) and then on ``model``, in place — ``model`` itself is returned, its parameters now
    sharded DTensors, so the optimiser must be built afterwards. ``sync_batchnorm`` converts BatchNorm
    layers to ``torch.nn.SyncBatchNorm`` (batch statistics over the global batch; torch supports it on
    CUDA only).
    """
    if strategy not in STRATEGIES:
        raise ConfigError(f"trainer.distributed must be one of {list(STRATEGIES)}, got {strategy!r}")
    if world_size() == 1:
        return model
    if sync_batchnorm:
        if device.type != "cuda":
            raise ConfigError("trainer.sync_batchnorm=true needs CUDA (torch's SyncBatchNorm has no CPU kernel); "
                              "use device=cuda or trainer.sync_batchnorm=false")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if strategy == "ddp":
        # "cuda" without an index is the rank's LOCAL_RANK device (init_from_env set it current)
        index = (device.index if device.index is not None else torch.cuda.current_device()) if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(
            model, device_ids=None if index is None else [index], forward_sync_buffers=False,
            find_unused_parameters=find_unused_parameters)
    from torch.distributed.fsdp import fully_shard

    broadcast_parameters(model)  # fully_shard keeps each rank's own slice: start from rank 0's weights
    for unit in shard_units:
        fully_shard(unit)
    fully_shard(model)
    return model


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def full_state_dict(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> tuple[dict, dict | None]:
    """(model, optimiser) state dicts with whole tensors — collective under FSDP (every rank must call it)."""
    if not is_sharded(model):
        return model.state_dict(), None if optimizer is None else optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True)
    return (get_model_state_dict(model, options=options),
            None if optimizer is None else get_optimizer_state_dict(model, optimizer, options=options))


def load_full_state_dict(model: nn.Module, state: dict, optimizer: torch.optim.Optimizer | None = None,
                         optimizer_state: dict | None = None) -> None:
    """Load whole-tensor state dicts (as ``full_state_dict`` returns) into a sharded model and its optimiser."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, state, options=options)
    if optimizer is not None and optimizer_state is not None:
        set_optimizer_state_dict(model, optimizer, optimizer_state, options=options)


def all_finite(value: torch.Tensor) -> bool:
    """Whether ``value`` is finite on every rank: a step is skipped everywhere or nowhere (else DDP hangs)."""
    finite = torch.isfinite(value).all()
    if world_size() == 1:
        return bool(finite)
    flag = finite.to(torch.float32).reshape(1)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def mean_over_ranks(value: torch.Tensor) -> torch.Tensor:
    """The mean of a scalar over ranks (e.g. the per-rank local losses → the global-batch loss)."""
    if world_size() == 1:
        return value.detach()
    out = value.detach().clone().float().reshape(1)
    dist.all_reduce(out)
    return out[0] / world_size()


def average_parameters(module: nn.Module) -> None:
    """Replace every parameter by its mean over ranks (modules trained apart on each rank's own data)."""
    if world_size() == 1:
        return
    for p in module.parameters():
        dist.all_reduce(p.data)
        p.data /= world_size()


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
