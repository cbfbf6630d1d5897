"""World size 2 (gloo, CPU) equals world size 1 on the same global batch for clip, siglip and bind.

Each rank gets half of a fixed global batch; the objectives gather embeddings with gradients and each
rank computes only its own rows (local loss); the mean of the per-rank losses and DDP-style gradient
averaging must reproduce the single-process loss and gradients (encoders, projection heads and
temperatures alike).
"""

import torch

from mmssl.objectives.crossmodal import clip_loss, clip_loss_local, siglip_loss, siglip_loss_local
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


def test_local_rows_average_to_the_global_loss():
    # the local-loss arithmetic without processes: two "ranks" of 3 rows each against all 6 columns
    g = torch.Generator().manual_seed(3)
    a, b = (torch.nn.functional.normalize(torch.randn(6, 5, generator=g), dim=1) for _ in range(2))
    scale, bias = torch.tensor(7.0), torch.tensor(-2.0)
    halves = [slice(0, 3), slice(3, 6)]
    clip = sum(clip_loss_local(a[h], b[h], a, b, scale, h.start) for h in halves) / 2
    sig = sum(siglip_loss_local(a[h], b, scale, bias, h.start) for h in halves) / 2
    assert torch.allclose(clip, clip_loss(a, b, scale), atol=1e-6)
    assert torch.allclose(sig, siglip_loss(a, b, scale, bias), atol=1e-5)
    assert torch.allclose(clip_loss_local(a, b, a, b, scale, 0), clip_loss(a, b, scale), atol=1e-6)
    # a wrong offset (every rank treating its rows as the first ones) is not the global loss
    wrong = sum(clip_loss_local(a[h], b[h], a, b, scale, 0) for h in halves) / 2
    assert not torch.allclose(wrong, clip_loss(a, b, scale), atol=1e-3)
