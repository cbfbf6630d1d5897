"""World size 2 (gloo, CPU) equals world size 1 on the same global batch for clip, siglip and bind.

Each rank gets half of a fixed global batch; the objectives gather embeddings with gradients, every
rank computes the global-batch loss, and DDP-style gradient averaging must reproduce the
single-process gradients (encoders, projection heads and temperatures alike).
"""

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mmssl.registry import OBJECTIVES
from mmssl.types import Batch
from tests.crossmodal.test_objectives import Flat

CASES = {"clip": dict(modalities=["image", "audio"]), "siglip": dict(modalities=["audio", "text"]),
         "bind": dict(modalities=["image", "audio", "text"])}
GLOBAL_BATCH = 8


def _global_batch():
    g = torch.Generator().manual_seed(1)
    return Batch({m: torch.randn(GLOBAL_BATCH, 6, generator=g) for m in ("image", "audio", "text")})


def _loss_and_grads(name, batch):
    torch.manual_seed(0)
    encoders = torch.nn.ModuleDict({m: Flat(m, 6) for m in ("image", "audio", "text")})
    objective = OBJECTIVES.build(name, encoders, projection_dim=4, hidden_dim=8, **CASES[name])
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
    for name in CASES:
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
    import open_clip.loss  # noqa: F401  (imported once here so the forked ranks inherit it)

    mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True, start_method="fork")
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)
    for name in CASES:
        loss, grads = _loss_and_grads(name, _global_batch())
        ddp_loss, ddp_grads = ddp[name]
        assert torch.allclose(ddp_loss, loss, atol=1e-5), (name, ddp_loss, loss)
        assert len(grads) == len(ddp_grads) and sum(g.abs().sum() for g in grads) > 0
        for i, (a, b) in enumerate(zip(ddp_grads, grads)):
            assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), (name, i, (a - b).abs().max())
