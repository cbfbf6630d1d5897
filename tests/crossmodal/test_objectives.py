"""CLIP, SigLIP and bind: values against independent re-derivations, pairs, gradients and errors."""

import math

import pytest
import torch
import torch.nn.functional as F

from mmssl.encoders.base import Encoder
from mmssl.errors import ConfigError
from mmssl.objectives.crossmodal import clip_loss, siglip_loss
from mmssl.registry import OBJECTIVES
from mmssl.types import Batch, EncoderOutput


class Flat(Encoder):
    """Flatten → linear: the smallest trainable encoder for any modality."""

    def __init__(self, modality: str, in_dim: int, dim: int = 8):
        super().__init__()
        self.modality, self.dim, self.net = modality, dim, torch.nn.Linear(in_dim, dim)

    def encode(self, x):
        return EncoderOutput(pooled=self.net(x.flatten(1).float()))


def _setup(mods=("image", "audio", "text")):
    encoders = torch.nn.ModuleDict({m: Flat(m, 6) for m in mods})
    batch = Batch({m: torch.randn(5, 6) for m in mods}, labels=torch.tensor([0, 1, 2, 0, 1]))
    return encoders, batch


def _manual_clip(a, b, scale):
    logits = scale * a @ b.T
    idx = torch.arange(len(a))
    return -0.5 * (logits.log_softmax(1)[idx, idx].mean() + logits.T.log_softmax(1)[idx, idx].mean())


def _manual_siglip(a, b, scale, bias):
    z = 2 * torch.eye(len(a)) - 1
    return -torch.log(torch.sigmoid(z * (scale * a @ b.T + bias))).sum() / len(a)


def test_clip_and_siglip_losses_match_the_formulas():
    a, b = F.normalize(torch.randn(6, 4), dim=1), F.normalize(torch.randn(6, 4), dim=1)
    scale = torch.tensor(7.0)
    assert torch.allclose(clip_loss(a, b, scale), _manual_clip(a, b, scale), atol=1e-6)
    assert torch.allclose(siglip_loss(a, b, scale, torch.tensor(-3.0)), _manual_siglip(a, b, scale, -3.0), atol=1e-5)
    eye = torch.eye(4)  # perfectly matched one-hot pairs at scale 100: CLIP loss ≈ 4·e^-100 ≈ 0, chance is log 4
    assert clip_loss(eye, eye, torch.tensor(100.0)) < 1e-6
    assert math.isclose(clip_loss(eye, torch.ones(4, 4) / 2, torch.tensor(1.0)).item(), math.log(4), rel_tol=1e-6)


def _project(obj, encoders, batch, m):
    return F.normalize(obj.projections[m](encoders[m](batch[m]).pooled), dim=1)


def test_clip_objective_value_and_gradients():
    encoders, batch = _setup(("image", "text"))
    obj = OBJECTIVES.build("clip", encoders, modalities=["image", "text"], projection_dim=4, hidden_dim=8,
                           temperature=0.1)
    out = obj(batch, encoders)
    a, b = _project(obj, encoders, batch, "image"), _project(obj, encoders, batch, "text")
    assert torch.allclose(out.loss, _manual_clip(a, b, torch.tensor(10.0)), atol=1e-5)
    assert set(obj.projections) == {"image", "text"}
    assert {"image_text/loss", "image_text/top1", "image_text/class_top1", "image_text/temperature"} <= set(out.metrics)
    out.loss.backward()
    for p in [*encoders.parameters(), *obj.parameters()]:
        assert p.grad is not None and torch.isfinite(p.grad).all()
    assert obj.log_scales["image_text"].grad.abs() > 0  # the temperature is learned


def test_siglip_objective_value():
    encoders, batch = _setup(("image", "audio"))
    obj = OBJECTIVES.build("siglip", encoders, projection_dim=4, hidden_dim=8, temperature=0.1, bias=-2.0)
    a, b = _project(obj, encoders, batch, "image"), _project(obj, encoders, batch, "audio")
    assert torch.allclose(obj(batch, encoders).loss, _manual_siglip(a, b, 10.0, -2.0), atol=1e-5)


@pytest.mark.parametrize("anchor,pairs", [(None, [("image", "audio"), ("image", "text"), ("audio", "text")]),
                                          ("text", [("text", "image"), ("text", "audio")])])
def test_bind_is_the_mean_over_its_pairs(anchor, pairs):
    encoders, batch = _setup()
    obj = OBJECTIVES.build("bind", encoders, modalities=["image", "audio", "text"], anchor=anchor,
                           projection_dim=4, hidden_dim=8, temperature=0.2)
    assert obj.pairs == pairs
    z = {m: _project(obj, encoders, batch, m) for m in ("image", "audio", "text")}
    expected = torch.stack([_manual_clip(z[a], z[b], torch.tensor(5.0)) for a, b in pairs]).mean()
    assert torch.allclose(obj(batch, encoders).loss, expected, atol=1e-5)


def test_bind_with_siglip_pairs_and_augmentation():
    encoders = torch.nn.ModuleDict({"image": Flat("image", 64), "audio": Flat("audio", 400)})
    batch = Batch({"image": torch.rand(4, 1, 8, 8), "audio": torch.randn(4, 400)})
    obj = OBJECTIVES.build("bind", encoders, pair_loss="siglip", augment=True,
                           augment_kwargs={"image": {"flip_p": 0.0, "jitter": 0.0}})
    assert set(obj.augments) == {"image", "audio"} and obj.augments["image"].flip_p == 0.0
    torch.manual_seed(0)
    first = obj(batch, encoders).loss
    torch.manual_seed(1)
    assert torch.isfinite(first) and not torch.allclose(first, obj(batch, encoders).loss)  # fresh views per call


def test_errors_name_the_missing_modality():
    encoders, batch = _setup(("image", "text"))
    with pytest.raises(ConfigError, match=r"no encoder for \['audio'\]"):
        OBJECTIVES.build("bind", encoders, modalities=["image", "audio", "text"])
    with pytest.raises(ConfigError, match="use objective=bind"):
        OBJECTIVES.build("clip", {**encoders, "audio": Flat("audio", 6)}, modalities=["image", "audio", "text"])
    with pytest.raises(ConfigError, match="anchor 'audio'"):
        OBJECTIVES.build("bind", encoders, anchor="audio")
    with pytest.raises(ConfigError, match="≥ 2 distinct"):
        OBJECTIVES.build("bind", encoders, modalities=["image", "image"])
    obj = OBJECTIVES.build("clip", encoders)
    with pytest.raises(ConfigError, match=r"batch has no \['text'\]"):
        obj(Batch({"image": torch.randn(3, 6)}), encoders)
