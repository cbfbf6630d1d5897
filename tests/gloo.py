"""Shared check: an objective on two gloo ranks (each with half of a global batch) equals one process.

``loss_and_grads(name, batch) -> (loss, [grad per parameter])`` builds the objective afresh (seeded) and
backpropagates once. Each rank runs it on its shard; losses and gradients are averaged across ranks as
DDP does, and must match the single-process values on the whole batch. The ranks are forked, so they
inherit the imported modules (seconds instead of a re-import of torch per rank).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mmssl.types import Batch


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, out_dir, names, global_batch, loss_and_grads):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    from mmssl.train.distributed import shard

    batch = shard(global_batch(), rank, world)
    results = {}
    for name in names:
        loss, grads = loss_and_grads(name, batch)
        dist.all_reduce(loss)
        for g in grads:  # what DDP does: sum and divide by the world size
            dist.all_reduce(g)
            g /= world
        results[name] = (loss / world, grads)
    if rank == 0:
        torch.save(results, os.path.join(out_dir, "ddp.pt"))
    dist.destroy_process_group()


def assert_two_ranks_match_one(tmp_path, names: Sequence[str], global_batch: Callable[[], Batch],
                               loss_and_grads: Callable) -> None:
    mp.start_processes(_worker, args=(2, free_port(), str(tmp_path), tuple(names), global_batch, loss_and_grads),
                       nprocs=2, join=True, start_method="fork")
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)
    for name in names:
        loss, grads = loss_and_grads(name, global_batch())
        ddp_loss, ddp_grads = ddp[name]
        assert torch.allclose(ddp_loss, loss, atol=1e-5), (name, ddp_loss, loss)
        assert len(grads) == len(ddp_grads)
        assert sum(g.abs().sum() for g in grads) > 0, name
        for i, (a, b) in enumerate(zip(ddp_grads, grads)):
            assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), (name, i, (a - b).abs().max())
