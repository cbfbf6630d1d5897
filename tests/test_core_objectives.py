"""SimCLR and BYOL: the two objectives that prove the contract (values, EMA, errors)."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmssl.errors import ConfigError
from mmssl.objectives.base import cosine_momentum, ema_update
from mmssl.objectives.contrastive import nt_xent
from mmssl.registry import ENCODERS, OBJECTIVES
from mmssl.types import Batch


def test_nt_xent_hand_computed():
    # two samples, 2-D unit vectors: views of sample 0 are e1 and e1, of sample 1 are e2 and e2
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z2 = z1.clone()
    t = 0.5
    loss, acc = nt_xent(z1, z2, t)
    # every view: positive similarity 1, the other two candidates similarity 0
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 2 * math.exp(0)))
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert acc.item() == 1.0


def test_nt_xent_matches_naive_loop():
    z1, z2 = torch.randn(5, 7), torch.randn(5, 7)
    t = 0.3
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    losses = []
    for i in range(10):
        pos = (i + 5) % 10
        sims = torch.stack([z[i] @ z[k] / t for k in range(10) if k != i])
        losses.append(-(z[i] @ z[pos] / t) + torch.logsumexp(sims, 0))
    assert nt_xent(z1, z2, t)[0].item() == pytest.approx(torch.stack(losses).mean().item(), rel=1e-5)


def test_nt_xent_no_nan_with_duplicates_and_batch_of_two():
    z = torch.ones(2, 4)
    loss, _ = nt_xent(z, z, 0.1)
    assert torch.isfinite(loss)


@pytest.mark.parametrize("name", ["simclr", "byol"])
def test_objective_moves_encoder(name):
    encoders = nn.ModuleDict({"image": ENCODERS.build("convnet", in_channels=1, width=4)})
    obj = OBJECTIVES.build(name, encoders, hidden_dim=16, projection_dim=8)
    batch = Batch({"image": torch.rand(6, 1, 8, 8)})
    out = obj(batch, encoders)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    grads = [p.grad for p in encoders.parameters()]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0


def test_byol_target_is_ema_of_online():
    encoders = nn.ModuleDict({"image": ENCODERS.build("convnet", in_channels=1, width=4)})
    byol = OBJECTIVES.build("byol", encoders, momentum=0.9, hidden_dim=16, projection_dim=8)
    target_before = [p.clone() for p in byol.target_encoder.parameters()]
    with torch.no_grad():
        for p in encoders.parameters():
            p.add_(1.0)
    byol.after_step(encoders, progress=0.0)  # progress 0 → τ = base momentum
    for before, online, after in zip(target_before, encoders["image"].parameters(), byol.target_encoder.parameters()):
        assert torch.allclose(after, 0.9 * before + 0.1 * online)
    assert not any(p.requires_grad for p in byol.target_encoder.parameters())
    assert cosine_momentum(0.99, 1.0) == pytest.approx(1.0) and cosine_momentum(0.99, 0.0) == pytest.approx(0.99)


def test_ema_update_copies_buffers():
    a, b = nn.BatchNorm1d(3), nn.BatchNorm1d(3)
    b.running_mean.fill_(2.0)
    ema_update(a, b, 0.5)
    assert torch.equal(a.running_mean, b.running_mean)


def test_wrong_modality_is_one_line():
    encoders = nn.ModuleDict({"image": ENCODERS.build("convnet", in_channels=1, width=4)})
    with pytest.raises(ConfigError, match=r"needs an encoder for 'audio'; configured: \['image'\]"):
        OBJECTIVES.build("simclr", encoders, modality="audio")
    obj = OBJECTIVES.build("simclr", encoders)
    with pytest.raises(ConfigError, match=r"needs modality 'image' but the batch has \['audio'\]"):
        obj(Batch({"audio": torch.rand(4, 100)}), encoders)
