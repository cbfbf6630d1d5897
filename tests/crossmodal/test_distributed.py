"""World size 2 (gloo, CPU) equals world size 1 on the same global batch for clip, siglip and bind.

Each rank gets half of a fixed global batch; the objectives gather embeddings with gradients, every
rank computes the global-batch loss, and DDP-style gradient averaging must reproduce the
single-process gradients (encoders, projection heads and temperatures alike).
"""

import torch

from mmssl.registry import OBJECTIVES
from mmssl.types import Batch
from tests.crossmodal.test_objectives import Flat
from tests.gloo import assert_two_ranks_match_one

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


def test_two_ranks_match_one_process(tmp_path):
    assert_two_ranks_match_one(tmp_path, list(CASES), _global_batch, _loss_and_grads)
