"""Two gloo ranks equal one process for the methods with batch statistics or cross-step state.

DINO's centre (mean teacher output of the global batch), SwAV's Sinkhorn codes (over the global batch
and the queue), NNCLR's support queue and DeepCluster-v2's memory bank and k-means labels: with each
rank holding half of a fixed global batch, the DDP-averaged loss and gradients must equal the
single-process ones, and every rank's state after the step (centre, queue, bank, assignments) must equal
the single-process state — not merely on average, which would hide a per-rank statistic.
"""

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from mmssl.registry import OBJECTIVES
from mmssl.types import Batch
from tests.gloo import free_port
from tests.objectives.conftest import make_encoders, strip_batchnorm

GLOBAL_BATCH = 8
NAMES = ("dino", "swav", "nnclr", "deepcluster_v2")
OPTIONS = {
    "dino": dict(out_dim=12, hidden_dim=16, bottleneck_dim=8),
    "swav": dict(n_prototypes=6, hidden_dim=16, projection_dim=8, queue_length=12, freeze_prototypes_steps=0),
    "nnclr": dict(hidden_dim=16, projection_dim=8, predictor_hidden_dim=16, queue_size=20),
    "deepcluster_v2": dict(hidden_dim=16, projection_dim=8, n_prototypes=[3, 4], memory_size=16),
}
STATE = {"dino": ("center",), "swav": ("queue", "queue_filled"), "nnclr": ("queue", "queue_ptr", "queue_filled"),
         "deepcluster_v2": ("bank", "bank_index", "assignments", "assigned_index", "prototypes0", "prototypes1")}


def _build(name):
    torch.manual_seed(0)
    encoders = make_encoders("obs")
    objective = strip_batchnorm(OBJECTIVES.build(name, encoders, augment="identity", **OPTIONS[name]))
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # state as after some training, identical on every rank
        if name == "dino":
            objective.center.copy_(torch.randn(12, generator=g))
        if name == "swav":  # a full queue, so the Sinkhorn problem includes it
            objective.queue.copy_(F.normalize(torch.randn(2, 12, 8, generator=g), dim=-1))
            objective.queue_filled.fill_(12)
        if name == "nnclr":  # partly filled support set
            objective.queue[:7] = F.normalize(torch.randn(7, 8, generator=g), dim=-1)
            objective.queue_ptr.fill_(7)
            objective.queue_filled.fill_(7)
        if name == "deepcluster_v2":  # last epoch's bank: every sample of the batch plus others
            objective.bank[:, :12] = F.normalize(torch.randn(2, 12, 8, generator=g), dim=-1)
            objective.bank_index[:12] = torch.randperm(12, generator=g)
            objective.bank_ptr.fill_(12)
            objective.epoch.fill_(0)
    return encoders, objective


def _global_batch():
    g = torch.Generator().manual_seed(1)
    return Batch({"obs": torch.randn(GLOBAL_BATCH, 6, generator=g)},
                 extra={"index": torch.randperm(12, generator=g)[:GLOBAL_BATCH],
                        "epoch": torch.ones(GLOBAL_BATCH, dtype=torch.long)})


def _run(name, batch):
    encoders, objective = _build(name)
    loss = objective(batch, encoders).loss
    loss.backward()
    params = list(encoders.parameters()) + list(objective.parameters())
    grads = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]
    objective.after_step(encoders, 0.5)
    state = {k: getattr(objective, k).clone() for k in STATE[name]}
    return loss.detach(), grads, state


def _worker(rank, world, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    from mmssl.train.distributed import shard

    batch = shard(_global_batch(), rank, world)
    results = {}
    for name in NAMES:
        loss, grads, state = _run(name, batch)
        dist.all_reduce(loss)
        for g in grads:  # DDP: sum and divide by the world size
            dist.all_reduce(g)
            g /= world
        results[name] = (loss / world, grads, state)
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_two_ranks_match_one_process_including_state(tmp_path):
    mp.start_processes(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True, start_method="fork")
    for rank in range(2):
        ddp = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        for name in NAMES:
            loss, grads, state = _run(name, _global_batch())
            ddp_loss, ddp_grads, ddp_state = ddp[name]
            assert torch.allclose(ddp_loss, loss, atol=1e-5), (name, ddp_loss, loss)
            assert sum(g.abs().sum() for g in grads) > 0, name
            for i, (a, b) in enumerate(zip(ddp_grads, grads)):
                assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), (name, i, (a - b).abs().max())
            for key, value in state.items():
                assert torch.allclose(ddp_state[key].float(), value.float(), atol=1e-5), (name, rank, key)
