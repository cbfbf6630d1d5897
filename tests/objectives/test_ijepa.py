"""I-JEPA: multi-block masks, the context encoder on context patches only, a naive re-derivation of the loss,
the EMA target, gradients."""

import math

import pytest
import torch
from torch import nn

from mmssl.encoders.vit import sincos_2d
from mmssl.errors import ConfigError
from mmssl.objectives.ijepa import block_size, multi_block_masks
from mmssl.registry import ENCODERS, OBJECTIVES
from mmssl.types import Batch
from tests.objectives.patch_helpers import audio_encoders, param_gradcheck, record_transform, vit_encoders

SMALL = dict(predictor_width=8, predictor_depth=1, predictor_heads=2, target_scale=[0.1, 0.2], min_keep=2)


def _is_rectangle(index: torch.Tensor, cols: int) -> tuple[int, int]:
    r, c = (index // cols).tolist(), (index % cols).tolist()
    h, w = max(r) - min(r) + 1, max(c) - min(c) + 1
    assert len(set(zip(r, c))) == len(r) == h * w  # every cell of the bounding box, once
    return h, w


def test_block_size_by_hand():
    torch.manual_seed(0)
    u = torch.rand(1).item()
    torch.manual_seed(0)
    h, w = block_size(14, 14, (0.15, 0.2), (0.75, 1.5))
    keep = int(196 * (0.15 + 0.05 * u))
    a = 0.75 + u * (1.5 - 0.75)  # linear in u, as the official multiblock.py
    assert (h, w) == (round(math.sqrt(keep * a)), round(math.sqrt(keep / a)))
    assert block_size(4, 4, (0.85, 1.0), (1.0, 1.0)) == (3, 3)  # kept below the grid, as the official code


def test_multi_block_masks():
    context, targets = multi_block_masks(20, (8, 8), num_targets=4, min_keep=4)
    m, b, kt = targets.shape
    assert (m, b) == (4, 20) and context.shape[0] == 20 and context.shape[1] >= 4
    sizes = {_is_rectangle(targets[i, j], 8) for i in range(m) for j in range(b)}
    assert len(sizes) == 1  # one target size per batch
    h, w = sizes.pop()
    assert 0.15 * 64 * 0.5 <= h * w <= 0.2 * 64 * 1.5
    for j in range(b):
        ctx = set(context[j].tolist())
        assert not ctx & set(targets[:, j].flatten().tolist())  # the context never sees a target patch
        assert context[j].tolist() == sorted(ctx)  # cut to the batch's shortest, keeping the first
    assert context.max() < 64 and targets.max() < 64
    positions = {tuple(targets[0, j].tolist()) for j in range(b)}
    assert len(positions) > 1  # positions differ per sample
    with pytest.raises(ConfigError, match="lower num_targets"):
        multi_block_masks(2, (2, 2), num_targets=4, min_keep=3, tries=5)


def test_loss_matches_a_naive_rederivation():
    encoders = vit_encoders()
    ijepa = OBJECTIVES.build("ijepa", encoders, **SMALL)
    with torch.no_grad():  # a target encoder different from the online one
        for p in ijepa.target_encoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.rand(3, 1, 8, 8)
    torch.manual_seed(4)
    loss = ijepa(Batch({"image": x}), encoders).loss
    torch.manual_seed(4)
    context, targets = multi_block_masks(3, (4, 4), **ijepa.masking)
    vit, target_vit = encoders["image"], ijepa.target_encoder
    e, t = vit.embed(x), target_vit.embed(x)
    pos = sincos_2d(4, 4, 8)
    total, count = 0.0, 0
    for b in range(3):
        h = target_vit.transform((t.tokens + t.pos)[b:b + 1])[0]
        h = (h - h.mean(-1, keepdim=True)) / (h.var(-1, unbiased=False, keepdim=True) + 1e-5).sqrt()
        ctx = vit.transform((e.tokens + e.pos)[b, context[b]][None])[0]
        for i in range(targets.shape[0]):
            idx = targets[i, b]
            seq = torch.cat([ijepa.predictor_embed(ctx) + pos[context[b]], ijepa.mask_token[0] + pos[idx]])
            for block in ijepa.predictor_blocks:
                seq = block(seq[None])[0]
            pred = ijepa.predictor_proj(ijepa.predictor_norm(seq))[-len(idx):]
            d = (pred - h[idx]).abs()
            total = total + torch.where(d < 1, 0.5 * d ** 2, d - 0.5).sum()  # smooth L1, β = 1
            count += d.numel()
    assert torch.allclose(loss, total / count, atol=1e-6)


def test_context_encoder_sees_only_the_context():
    encoders = vit_encoders()
    ijepa = OBJECTIVES.build("ijepa", encoders, **SMALL)  # before recording: the target is a deep copy
    seen = record_transform(encoders["image"])
    target_seen = record_transform(ijepa.target_encoder)
    x = torch.rand(5, 1, 8, 8)
    torch.manual_seed(6)
    out = ijepa(Batch({"image": x}), encoders)
    torch.manual_seed(6)
    context, _ = multi_block_masks(5, (4, 4), **ijepa.masking)
    e = encoders["image"].embed(x)
    assert len(seen) == 1 and torch.allclose(seen[0], torch.stack([(e.tokens + e.pos)[b, context[b]] for b in range(5)]))
    assert target_seen[0].shape == (5, 16, 16)  # the target encoder sees every patch
    assert out.metrics["context_fraction"] == context.shape[1] / 16


def test_target_is_ema_and_gets_no_gradient():
    encoders = vit_encoders()
    ijepa = OBJECTIVES.build("ijepa", encoders, **SMALL)
    ijepa(Batch({"image": torch.rand(4, 1, 8, 8)}), encoders).loss.backward()
    assert all(p.grad is None for p in ijepa.target_encoder.parameters())
    assert encoders["image"].patch_embed.weight.grad.abs().sum() > 0
    old = ijepa.target_encoder.patch_embed.weight.detach().clone()
    with torch.no_grad():
        encoders["image"].patch_embed.weight.add_(1.0)
    ijepa.after_step(encoders, 0.5)
    tau = 0.996 + (1.0 - 0.996) * 0.5
    assert ijepa.momentum == pytest.approx(tau)
    expected = tau * old + (1 - tau) * encoders["image"].patch_embed.weight
    assert torch.allclose(ijepa.target_encoder.patch_embed.weight, expected)
    ijepa.after_step(encoders, 1.0)
    assert ijepa.momentum == pytest.approx(1.0)


def test_gradients():
    encoders = vit_encoders(width=8, depth=1)
    ijepa = OBJECTIVES.build("ijepa", encoders, **SMALL)
    assert param_gradcheck(encoders, ijepa, torch.rand(2, 1, 8, 8),
                           ["encoders.image.patch_embed.bias", "objective.mask_token", "objective.predictor_embed.bias"])


def test_audio_patches_and_errors():
    encoders = audio_encoders()
    ijepa = OBJECTIVES.build("ijepa", encoders, **SMALL)
    out = ijepa(Batch({"audio": 0.1 * torch.randn(2, 2000)}), encoders)
    assert torch.isfinite(out.loss) and ijepa.modality == "audio"
    with pytest.raises(ConfigError, match="momentum"):
        OBJECTIVES.build("ijepa", vit_encoders(), momentum=0.9, momentum_end=0.5)
    with pytest.raises(ConfigError, match="cannot do"):
        OBJECTIVES.build("ijepa", nn.ModuleDict({"image": ENCODERS.build("convnet", width=4)}))
