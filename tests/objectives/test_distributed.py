"""World size 2 (gloo, CPU) equals world size 1 on the same global batch: loss and DDP-averaged gradients.

Each rank gets half of a fixed global batch. BatchNorm in the heads is replaced by Identity because BN
statistics are per rank by design (DDP without SyncBatchNorm); views are the inputs themselves
(``augment="identity"``) so they do not depend on per-rank random streams.
"""

import torch

from mmssl.registry import OBJECTIVES
from tests.gloo import assert_two_ranks_match_one
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


def test_two_ranks_match_one_process(tmp_path):
    assert_two_ranks_match_one(tmp_path, list(NAMES), _global_batch, _loss_and_grads)
