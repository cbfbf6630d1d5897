"""World size 2 (gloo, CPU) equals world size 1 on the same global batch: loss and DDP-averaged gradients.

Each rank gets half of a fixed global batch. BatchNorm in the heads is replaced by Identity because BN
statistics are per rank by design (DDP without SyncBatchNorm); views are the inputs themselves
(``augment="identity"``) so they do not depend on per-rank random streams.
"""

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mmssl.registry import OBJECTIVES
from tests.objectives.conftest import make_encoders, strip_batchnorm

NAMES = ("simclr", "moco_v3", "barlow_twins", "vicreg")
GLOBAL_BATCH = 8


def _build(name):
    torch.manual_seed(0)
    encoders = make_encoders("obs")
    objective = strip_batchnorm(OBJECTIVES.build(name, encoders, hidden_dim=16, projection_dim=8, augment="identity"))
    return encoders, objective


def _global_batch():
    from mmssl.types import Batch

    return Batch({"obs": torch.randn(GLOBAL_BATCH, 6, generator=torch.Generator().manual_seed(1))})


def _loss_and_grads(name, batch):
    encoders, objective = _build(name)
    loss = objective(batch, encoders).loss
    loss.backward()
    params = list(encoders.parameters()) + list(objective.parameters())
    return loss.detach(), [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]


def _worker(rank, world, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    from mmssl.train.distributed import shard

    batch = shard(_global_batch(), rank, world)
    results = {}
    for name in NAMES:
        loss, grads = _loss_and_grads(name, batch)
        dist.all_reduce(loss)
        for g in grads:  # what DDP does: sum and divide by the world size
            dist.all_reduce(g)
            g /= world
        results[name] = (loss / world, grads)
    if rank == 0:
        torch.save(results, os.path.join(out_dir, "ddp.pt"))
    dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_match_one_process(tmp_path):
    # fork: the children inherit the imported modules instead of re-importing torch (seconds, not tens)
    mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True, start_method="fork")
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)
    for name in NAMES:
        loss, grads = _loss_and_grads(name, _global_batch())
        ddp_loss, ddp_grads = ddp[name]
        assert torch.allclose(ddp_loss, loss, atol=1e-5), (name, ddp_loss, loss)
        assert len(grads) == len(ddp_grads)
        assert sum(g.abs().sum() for g in grads) > 0, name
        for i, (a, b) in enumerate(zip(ddp_grads, grads)):
            assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), (name, i, (a - b).abs().max())
