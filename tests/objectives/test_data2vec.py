"""data2vec: teacher targets (top-K FFN outputs, instance-normalised) against a hand-stepped transformer,
the loss at masked positions only, the student's masked input, text and audio, EMA, gradients."""

import math

import pytest
import torch
from torch import nn

from mmssl.data.tokenize import tokenize
from mmssl.errors import ConfigError
from mmssl.objectives.data2vec import ffn_outputs, regression_loss
from mmssl.objectives.predictive import random_token_mask
from mmssl.registry import ENCODERS, OBJECTIVES
from mmssl.types import Batch
from tests.objectives.patch_helpers import audio_encoders, param_gradcheck, record_transform, vit_encoders


def _manual_ffn_outputs(vit, x):
    """Step the ViT's open_clip blocks by hand: x₁ = x + attn(ln₁ x); a = mlp(ln₂ x₁); x ← x₁ + a."""
    e = vit.embed(x)
    h, outs = e.tokens + e.pos, []
    for block in vit.blocks:
        h1 = h + block.attention(block.ln_1(h))
        a = block.mlp(block.ln_2(h1))
        outs.append(a)
        h = h1 + a
    return outs


def _instance_norm(a):  # over positions, per sample and feature, biased variance, ε = 1e-5
    return (a - a.mean(1, keepdim=True)) / (a.var(1, unbiased=False, keepdim=True) + 1e-5).sqrt()


def test_targets_are_the_mean_of_instance_normalised_top_k_ffn_outputs():
    encoders = vit_encoders(depth=3)
    d2v = OBJECTIVES.build("data2vec", encoders, top_k=2)
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        layers = _manual_ffn_outputs(d2v.target_encoder, x)
        expected = (_instance_norm(layers[1]) + _instance_norm(layers[2])) / 2
        assert torch.allclose(d2v.targets(x, 16), expected, atol=1e-5)
        raw = OBJECTIVES.build("data2vec", encoders, top_k=3, instance_norm=False)
        assert torch.allclose(raw.targets(x, 16), sum(_manual_ffn_outputs(raw.target_encoder, x)) / 3, atol=1e-5)


def test_loss_matches_a_naive_rederivation():
    encoders = vit_encoders()
    d2v = OBJECTIVES.build("data2vec", encoders, top_k=2)
    x = torch.rand(3, 1, 8, 8)
    torch.manual_seed(7)
    loss = d2v(Batch({"image": x}), encoders).loss
    torch.manual_seed(7)
    mask = random_token_mask(3, 16, 0.6, "cpu")
    assert (mask.sum(1) == 10).all()  # round(0.6·16) masked per image, exactly
    vit = encoders["image"]
    e = vit.embed(x)
    with torch.no_grad():
        layers = _manual_ffn_outputs(d2v.target_encoder, x)
        y = (_instance_norm(layers[0]) + _instance_norm(layers[1])) / 2
    total, count = 0.0, 0
    for b in range(3):
        tokens = torch.stack([d2v.mask_token[0, 0] if mask[b, i] else e.tokens[b, i] for i in range(16)]) + e.pos[0]
        h = d2v.head(vit.transform(tokens[None])[0])
        for i in range(16):
            if mask[b, i]:
                total = total + ((h[i] - y[b, i]) ** 2).sum() / math.sqrt(16)
                count += 1
    assert torch.allclose(loss, total / count, atol=1e-5)


def test_student_input_and_masked_only_loss():
    encoders = vit_encoders()
    d2v = OBJECTIVES.build("data2vec", encoders, top_k=2)
    seen = record_transform(encoders["image"])  # after building: the teacher is a deep copy
    x = torch.rand(4, 1, 8, 8)
    torch.manual_seed(8)
    mask = random_token_mask(4, 16, 0.6, "cpu")

    def run(perturb=None):
        handle = None
        if perturb is not None:
            handle = d2v.head.register_forward_hook(lambda m, i, out: out + 50.0)  # the head sees masked tokens only
        torch.manual_seed(8)
        loss = d2v(Batch({"image": x}), encoders).loss
        if handle:
            handle.remove()
        return loss

    base = run()
    e = encoders["image"].embed(x)
    student_in = seen[0]
    assert torch.allclose(student_in[mask], (d2v.mask_token[0] + e.pos[0].expand(4, -1, -1)[mask]).detach())
    assert torch.allclose(student_in[~mask], (e.tokens + e.pos)[~mask])
    # the loss changes only through masked positions: perturbing the student's output at unmasked positions
    hook = encoders["image"].norm.register_forward_hook(lambda m, i, out: out + 10.0 * (~mask)[..., None])
    torch.manual_seed(8)
    assert torch.allclose(d2v(Batch({"image": x}), encoders).loss, base)
    hook.remove()
    assert run("all") > base


def test_regression_loss_by_hand():
    p, t = torch.tensor([[1.0, 2.0, 0.0, 0.0]]), torch.tensor([[0.0, 0.0, 0.0, 3.0]])
    assert regression_loss(p, t, 0.0).item() == pytest.approx((1 + 4 + 9) / 2)
    # smooth L1 with β = 2: |d| < 2 → d²/(2β), else |d| - β/2
    assert regression_loss(p, t, 2.0).item() == pytest.approx((0.25 + 1.0 + 2.0) / 2)


def test_text_student_corruption_and_teacher_sees_clean_ids():
    enc = ENCODERS.build("text_transformer", dim=16, depth=2, heads=2, context_length=16)
    encoders = nn.ModuleDict({"text": enc})
    d2v = OBJECTIVES.build("data2vec", encoders, modality="text", top_k=2, mask_prob=0.3)
    ids = tokenize(["the digit seven", "a nine and a two and a five", "zero"] * 2, context_length=16)
    torch.manual_seed(9)
    corrupted, chosen = d2v.masking(ids)
    n = ((ids != 0) & (ids < 49406)).sum(1)
    assert torch.equal(chosen.sum(1), (n.float() * 0.3).round().clamp(min=1).long())
    assert not chosen[(ids == 0) | (ids >= 49406)].any()  # never padding, start or end
    assert torch.equal(corrupted[~chosen], ids[~chosen])
    seen = []
    d2v.target_encoder.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    out = d2v(Batch({"text": ids}), encoders)
    assert torch.equal(seen[0], ids) and torch.isfinite(out.loss)
    out.loss.backward()
    assert enc.token_embedding.weight.grad.abs().sum() > 0
    # the hooks fire in eval mode too (torch's fused fast path is switched off inside ffn_outputs)
    d2v.target_encoder.eval()
    with torch.no_grad(), ffn_outputs(d2v.target_encoder) as layers:
        d2v.target_encoder(ids)
    assert len(layers) == 2 and layers[0].shape == (6, 16, 16)


def test_audio_patches():
    encoders = audio_encoders(depth=2)
    d2v = OBJECTIVES.build("data2vec", encoders, top_k=2)
    out = d2v(Batch({"audio": 0.1 * torch.randn(2, 2000)}), encoders)
    assert torch.isfinite(out.loss) and 0.5 < out.metrics["masked_fraction"] < 0.7
    out.loss.backward()
    assert encoders["audio"].patch.weight.grad.abs().sum() > 0


def test_ema_schedule():
    encoders = vit_encoders()
    d2v = OBJECTIVES.build("data2vec", encoders, top_k=1, momentum=0.9, momentum_end=0.99)
    old = d2v.target_encoder.norm.weight.detach().clone()
    with torch.no_grad():
        encoders["image"].norm.weight.add_(1.0)
    d2v.after_step(encoders, 0.5)
    assert d2v.momentum == pytest.approx(0.945)
    assert torch.allclose(d2v.target_encoder.norm.weight, 0.945 * old + 0.055 * encoders["image"].norm.weight)


def test_gradients():
    encoders = vit_encoders(width=8, depth=2)
    d2v = OBJECTIVES.build("data2vec", encoders, top_k=2)
    assert param_gradcheck(encoders, d2v, torch.rand(2, 1, 8, 8),
                           ["encoders.image.patch_embed.bias", "objective.mask_token", "objective.head.bias"])


def test_errors():
    with pytest.raises(ConfigError, match="top_k=5"):
        OBJECTIVES.build("data2vec", vit_encoders(depth=2), top_k=5)
    with pytest.raises(ConfigError, match="has none"):
        OBJECTIVES.build("data2vec", nn.ModuleDict({"image": ENCODERS.build("convnet", width=4)}))
    with pytest.raises(ConfigError, match="cannot do"):
        OBJECTIVES.build("data2vec", nn.ModuleDict({"image": _PlainTransformerImage()}), top_k=1)


class _PlainTransformerImage(nn.Module):
    """An image encoder with transformer blocks but without the patch protocol."""

    modality, dim = "image", 16

    def __init__(self):
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)


def test_open_clip_vision_tower_targets_drop_the_class_token():
    enc = ENCODERS.build("open_clip_vision", in_channels=1, embed_dim=24,
                         config={"image_size": 8, "patch_size": 2, "width": 16, "layers": 2, "head_width": 8})
    encoders = nn.ModuleDict({"image": enc})
    d2v = OBJECTIVES.build("data2vec", encoders, top_k=1)
    assert d2v.mask_token.shape[-1] == 16 and d2v.head.in_features == 24  # patch width vs projected output
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        v = d2v.target_encoder.visual
        h = v.ln_pre(v._embeds(d2v.target_encoder._prepare(x)))
        for block in v.transformer.resblocks:
            h1 = h + block.attention(block.ln_1(h))
            a = block.mlp(block.ln_2(h1))
            h = h1 + a
        got = d2v.targets(x, 16)
        assert (got - _instance_norm(a[:, 1:])).abs().max() < 1e-4, (got - _instance_norm(a[:, 1:])).abs().max()
    out = d2v(Batch({"image": x}), encoders)
    out.loss.backward()
    assert torch.isfinite(out.loss) and enc.visual.conv1.weight.grad.abs().sum() > 0
