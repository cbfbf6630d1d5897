"""DINO: the loss against a loop re-derivation of the official DINOLoss, hand cases, gradients, schedules, state."""

import math

import pytest
import torch
import torch.nn.functional as F

from mmssl.errors import ConfigError
from mmssl.objectives.dino import DINOHead, dino_loss
from mmssl.registry import OBJECTIVES
from tests.objectives.conftest import TEST_AUGMENT, make_batch, make_encoders

SMALL = dict(out_dim=12, hidden_dim=16, bottleneck_dim=8)


def _official_loop(student, teacher, center, student_temp, teacher_temp):
    """``DINOLoss.forward`` of main_dino.py, written as its two loops over (teacher view, student view)."""
    total, terms = 0.0, 0
    for iq in range(teacher.shape[0]):
        q = F.softmax((teacher[iq] - center) / teacher_temp, dim=-1)
        for v in range(student.shape[0]):
            if v == iq:
                continue
            total = total + torch.sum(-q * F.log_softmax(student[v] / student_temp, dim=-1), dim=-1).mean()
            terms += 1
    return total / terms


def test_loss_matches_the_official_loops():
    g = torch.Generator().manual_seed(0)
    student, teacher, center = torch.randn(5, 4, 7, generator=g), torch.randn(2, 4, 7, generator=g), torch.randn(7, generator=g)
    loss, entropy = dino_loss(student, teacher, center, 0.1, 0.04)
    assert torch.allclose(loss, _official_loop(student, teacher, center, 0.1, 0.04), atol=1e-5)
    assert 0 <= entropy <= math.log(7)


def test_hand_computed_cases():
    # a teacher equal to its centre is uniform (entropy log K); against a uniform student the CE is log K
    flat = torch.ones(2, 3, 5)
    loss, entropy = dino_loss(torch.zeros(4, 3, 5), flat, torch.ones(5), 0.1, 0.04)
    assert torch.allclose(loss, torch.tensor(math.log(5))) and torch.allclose(entropy, torch.tensor(math.log(5)))
    # a sharp teacher on class 0 and a student putting logit a there: CE = log(e^{a/τ} + K-1) - a/τ
    teacher = torch.full((2, 1, 3), -10.0)
    teacher[..., 0] = 10.0
    student = torch.zeros(2, 1, 3)
    student[..., 0] = 0.2
    loss, _ = dino_loss(student, teacher, torch.zeros(3), 0.1, 0.04)
    assert torch.allclose(loss, torch.tensor(math.log(math.exp(2.0) + 2) - 2.0), atol=1e-5)


def test_gradient_check():
    g = torch.Generator().manual_seed(1)
    student = torch.randn(4, 3, 5, generator=g, dtype=torch.double, requires_grad=True)
    teacher = torch.randn(2, 3, 5, generator=g, dtype=torch.double)
    center = torch.randn(5, generator=g, dtype=torch.double)
    raw = dino_loss.__wrapped__  # the float32 wrapper would round the double inputs gradcheck needs
    assert torch.autograd.gradcheck(lambda s: raw(s, teacher, center, 0.1, 0.04)[0], (student,))


@pytest.mark.parametrize("modality", ["image", "audio", "obs"])
def test_runs_on_every_modality_and_trains_only_the_student(modality):
    encoders = make_encoders(modality)
    dino = OBJECTIVES.build("dino", encoders, augment=TEST_AUGMENT[modality], **SMALL)
    out = dino(make_batch(modality, 6), encoders)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert all(p.grad is not None for p in encoders.parameters())
    assert all(p.grad is None for p in dino.teacher_encoder.parameters())
    assert all(p.grad is None for p in dino.teacher_head.parameters())
    assert dino.head.last_layer.weight_g.grad is None  # norm_last_layer: the gain stays 1


def test_multi_crop_views_from_the_image_augmentation():
    encoders = make_encoders("image")
    dino = OBJECTIVES.build("dino", encoders, augment="simclr", multi_crop={"local_crops": 3, "local_size": 4}, **SMALL)
    seen = []
    encoder = encoders["image"]
    handle = encoder.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape)))
    dino(make_batch("image", 5), encoders)
    handle.remove()
    assert seen == [(10, 1, 8, 8), (15, 1, 4, 4)]  # 2 global views in one call, 3 local views in another


def test_multi_crop_on_audio_is_a_config_error_unless_disabled():
    with pytest.raises(ConfigError, match="multi_crop=null"):
        OBJECTIVES.build("dino", make_encoders("audio"), multi_crop={"local_crops": 2}, **SMALL)
    dino = OBJECTIVES.build("dino", make_encoders("audio"), multi_crop={"local_crops": 0, "local_size": 4}, **SMALL)
    assert dino.augment.local_crops == 0
    with pytest.raises(ConfigError, match="unknown key"):
        OBJECTIVES.build("dino", make_encoders("image"), multi_crop={"local_crop": 2}, **SMALL)


def test_centre_update_teacher_temperature_warmup_and_frozen_last_layer():
    torch.manual_seed(0)
    encoders = make_encoders("obs")
    dino = OBJECTIVES.build("dino", encoders, augment="identity", teacher_temp=0.07, warmup_teacher_temp=0.03,
                            warmup_teacher_temp_steps=4, freeze_last_layer_steps=1, center_momentum=0.8, **SMALL)
    batch = make_batch("obs", 6)
    out = dino(batch, encoders)
    assert out.metrics["teacher_temperature"] == pytest.approx(0.03)
    out.loss.backward()
    assert dino.head.last_layer.weight_v.grad is None  # frozen for the first step
    with torch.no_grad():
        teacher = dino.teacher_head(dino.teacher_encoder(torch.cat([batch["obs"]] * 2)).pooled)
    dino.after_step(encoders, 0.25)
    assert torch.allclose(dino.center, 0.2 * teacher.mean(0), atol=1e-6)  # c ← 0.8·0 + 0.2·mean
    assert int(dino.step) == 1
    out = dino(batch, encoders)
    assert out.metrics["teacher_temperature"] == pytest.approx(0.04)  # 0.03 + (1/4)·0.04
    out.loss.backward()
    assert dino.head.last_layer.weight_v.grad is not None
    for _ in range(5):
        dino.after_step(encoders, 0.5)
    assert dino.teacher_temperature() == pytest.approx(0.07)


def test_batch_norm_in_the_head_undoes_a_common_feature_component():
    """Features sharing one large component (a conv net's ReLU-pooled output) give a near-uniform centred teacher
    distribution through the plain head; ``use_bn`` (main_dino.py's --use_bn_in_head) normalises it away."""
    torch.manual_seed(0)
    features = 3.0 + 0.1 * torch.randn(64, 32)
    entropies = {}
    for use_bn in (False, True):
        torch.manual_seed(1)
        head = DINOHead(32, 256, hidden_dim=64, bottleneck_dim=16, use_bn=use_bn)
        assert any(isinstance(m, torch.nn.BatchNorm1d) for m in head.modules()) == use_bn
        logits = head(features)
        q = F.softmax((logits - logits.mean(0)) / 0.04, dim=-1)
        entropies[use_bn] = -(q * q.log()).sum(-1).mean().item()
    assert entropies[False] > 0.95 * math.log(256)  # ≈ uniform: the centre removed all there was
    assert entropies[True] < 0.5 * math.log(256)


def test_use_bn_in_head_reaches_student_and_teacher_heads():
    encoders = make_encoders("obs")
    dino = OBJECTIVES.build("dino", encoders, augment="identity", use_bn_in_head=True, **SMALL)
    for head in (dino.head, dino.teacher_head):
        assert any(isinstance(m, torch.nn.BatchNorm1d) for m in head.modules())
    out = dino(make_batch("obs", 6), encoders)
    out.loss.backward()
    assert torch.isfinite(out.loss) and all(p.grad is not None for p in encoders.parameters())


def test_state_dict_holds_centre_and_step():
    dino = OBJECTIVES.build("dino", make_encoders("obs"), augment="identity", **SMALL)
    keys = dino.state_dict().keys()
    assert {"center", "step", "head.last_layer.weight_v", "teacher_head.last_layer.weight_v"} <= set(keys)


@pytest.mark.parametrize("bad", [dict(teacher_temp=0.0), dict(momentum=1.5), dict(warmup_teacher_temp_steps=-1)])
def test_bad_options(bad):
    with pytest.raises(ConfigError, match="dino"):
        OBJECTIVES.build("dino", make_encoders("obs"), augment="identity", **SMALL, **bad)
