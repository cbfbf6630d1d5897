"""Autoencoder and β-VAE: hand-computed losses, KL, β, denoising target, learning, edge cases, errors."""

import math

import pytest
import torch
from torch import nn

from mmssl.errors import ConfigError, ShapeError
from mmssl.registry import OBJECTIVES
from mmssl.types import Batch
from tests.objectives.conftest import OBS_DIM, make_batch, make_encoders

SMALL = {"hidden_dim": 16, "image_size": 8}


def _zero(linear: nn.Linear, bias=0.0):
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.copy_(torch.as_tensor(bias).expand_as(linear.bias))


def test_autoencoder_zero_decoder_loss_is_signal_energy():
    encoders = make_encoders("obs")
    obj = OBJECTIVES.build("autoencoder", encoders, **SMALL)
    _zero(obj.decoder[-1])
    x = make_batch("obs", 5)["obs"]
    out = obj(Batch({"obs": x}), encoders)
    assert out.loss.item() == pytest.approx(x.pow(2).mean().item(), rel=1e-6)
    assert out.metrics["reconstruction_mse"] == pytest.approx(out.loss.item())


def test_autoencoder_images_decode_through_a_sigmoid():
    encoders = make_encoders("image")
    obj = OBJECTIVES.build("autoencoder", encoders, **SMALL)
    _zero(obj.decoder[-1])
    x = torch.rand(3, 1, 8, 8)
    out = obj(Batch({"image": x}), encoders)
    assert out.loss.item() == pytest.approx((x - 0.5).pow(2).mean().item(), rel=1e-6)  # sigmoid(0) = ½
    smaller = OBJECTIVES.build("autoencoder", encoders, hidden_dim=16, image_size=4)
    assert torch.isfinite(smaller(Batch({"image": x}), encoders).loss)  # targets resized to 4×4


def test_denoising_autoencoder_targets_the_clean_input():
    encoders = make_encoders("obs")
    obj = OBJECTIVES.build("autoencoder", encoders, augment="gaussian_noise", augment_kwargs={"std": 1.0}, **SMALL)
    _zero(obj.decoder[-1])
    seen = []
    encoders["obs"].register_forward_hook(lambda mod, inp, out: seen.append(inp[0].detach()))
    x = make_batch("obs", 4)["obs"]
    out = obj(Batch({"obs": x}), encoders)
    assert (seen[-1] - x).abs().mean() > 0.3  # the encoder saw the noisy view …
    assert out.loss.item() == pytest.approx(x.pow(2).mean().item(), rel=1e-6)  # … the loss the clean input


def test_autoencoder_learns():
    encoders = make_encoders("obs")
    obj = OBJECTIVES.build("autoencoder", encoders, **SMALL)
    opt = torch.optim.Adam([*encoders.parameters(), *obj.parameters()], lr=1e-2)
    x = make_batch("obs", 64)["obs"]
    first = obj(Batch({"obs": x}), encoders).loss.item()
    for _ in range(60):
        loss = obj(Batch({"obs": x}), encoders).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


def test_vae_terms_hand_computed():
    encoders = make_encoders("obs")
    obj = OBJECTIVES.build("vae", encoders, latent_dim=4, beta=1.0, **SMALL)
    _zero(obj.decoder[-1])  # x̂ = 0 whatever z is
    _zero(obj.posterior, bias=torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]))  # μ = 1, log σ² = 0
    x = make_batch("obs", 5)["obs"]
    out = obj(Batch({"obs": x}), encoders)
    rec = 0.5 * x.pow(2).sum(1).mean()
    kl = 0.5 * 4 * 1.0  # ½ Σ (μ² + σ² − log σ² − 1) with μ = σ = 1 over 4 latents
    assert out.metrics["kl"] == pytest.approx(kl, rel=1e-6)
    assert out.metrics["reconstruction"] == pytest.approx(rec.item(), rel=1e-6)
    assert out.loss.item() == pytest.approx((rec.item() + kl) / OBS_DIM, rel=1e-6)
    obj.beta = 3.0
    assert obj(Batch({"obs": x}), encoders).loss.item() == pytest.approx((rec.item() + 3 * kl) / OBS_DIM, rel=1e-6)


def test_vae_images_use_bernoulli_likelihood():
    encoders = make_encoders("image")
    obj = OBJECTIVES.build("vae", encoders, latent_dim=4, **SMALL)
    _zero(obj.decoder[-1])
    _zero(obj.posterior)  # q(z|x) = N(0, I) = prior: KL = 0
    out = obj(Batch({"image": torch.rand(3, 1, 8, 8)}), encoders)
    assert out.metrics["kl"] == pytest.approx(0.0, abs=1e-7)
    assert out.loss.item() == pytest.approx(math.log(2), rel=1e-6)  # BCE of logit 0 is log 2 for any target


@pytest.mark.parametrize("name", ["autoencoder", "vae"])
@pytest.mark.parametrize("modality", ["image", "obs"])
def test_gradients_reach_encoder_and_duplicates_are_finite(name, modality):
    encoders = make_encoders(modality)
    obj = OBJECTIVES.build(name, encoders, **SMALL)
    x = make_batch(modality, 1)[modality]
    out = obj(Batch({modality: torch.cat([x, x])}), encoders)
    out.loss.backward()
    assert torch.isfinite(out.loss) and all(isinstance(v, float) for v in out.metrics.values())
    grads = [p.grad for p in encoders.parameters() if p.grad is not None]
    assert grads and sum(g.abs().sum() for g in grads) > 0


@pytest.mark.parametrize("name", ["autoencoder", "vae"])
def test_errors_are_one_line(name):
    for wrong in ("text", "audio"):
        with pytest.raises(ConfigError) as info:
            OBJECTIVES.build(name, make_encoders(wrong), modality=wrong)
        assert "\n" not in str(info.value) and "'image'" in str(info.value) and "'obs'" in str(info.value)
    encoders = make_encoders("obs")
    obj = OBJECTIVES.build(name, encoders, **SMALL)
    with pytest.raises(ShapeError):
        obj(Batch({"obs": torch.randn(2, 6, 2)}), encoders)
    with pytest.raises(ConfigError):
        OBJECTIVES.build("vae", encoders, beta=-1.0)
