"""Edge cases found in review: bf16 autocast, special ids, raw images in segment tasks, batch of one, band tokens."""

import pytest
import torch
from torch import nn

from mmssl.errors import ConfigError
from mmssl.objectives.predictive import time_steps
from mmssl.registry import ENCODERS, OBJECTIVES
from mmssl.types import Batch
from tests.objectives.conftest import make_batch, make_encoders


@pytest.mark.parametrize("name", ["simclr", "dcl", "moco_v2", "moco_v3", "triplet", "barlow_twins", "vicreg"])
def test_losses_are_float32_under_bf16_autocast(name):
    encoders = make_encoders("obs")
    objective = OBJECTIVES.build(name, encoders, hidden_dim=16, projection_dim=8, augment="gaussian_noise")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = objective(make_batch("obs", 6), encoders)
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)


def test_masked_text_random_replacements_are_ordinary_ids():
    encoders = make_encoders("text")
    mlm = OBJECTIVES.build("masked_text", encoders, vocab_size=64, special_ids=[62, 63], pad_id=0)
    ordinary = set(mlm.masking.ordinary_ids.tolist())
    assert len(ordinary) == 61 and not ordinary & {0, 62, 63}


@pytest.mark.parametrize("name", ["temporal_order", "next_segment"])
def test_segment_tasks_refuse_raw_images(name):
    encoders = make_encoders("image")
    objective = OBJECTIVES.build(name, encoders, hidden_dim=8)
    with pytest.raises(ConfigError, match=r"images need \(B, T, C, H, W\) sequences"):
        objective(make_batch("image", 4), encoders)


def test_next_segment_with_a_batch_of_one():
    encoders = make_encoders("obs")
    objective = OBJECTIVES.build("next_segment", encoders, hidden_dim=8).eval()  # BatchNorm heads train only at B ≥ 2
    for seed in range(4):  # both labels occur; the negative is the swapped pair, never the positive itself
        torch.manual_seed(seed)
        out = objective(make_batch("obs", 1, steps=6), encoders)
        assert torch.isfinite(out.loss)


def test_band_tokens_are_averaged_per_time_step():
    class Banded(nn.Module):
        bands = 2

    tokens = torch.arange(12.0).view(1, 6, 2)  # (t f) order: t0f0, t0f1, t1f0, ...
    steps = time_steps(tokens, Banded())
    assert steps.shape == (1, 3, 2) and torch.equal(steps[0, 0], (tokens[0, 0] + tokens[0, 1]) / 2)
    assert time_steps(tokens, nn.Identity()) is tokens  # one band: unchanged
    encoders = nn.ModuleDict({"audio": ENCODERS.build("audio_transformer", sample_rate=8000, n_mels=16, dim=16, depth=1,
                                                      heads=2, patch_mels=8)})
    batch = Batch({"audio": 0.1 * torch.randn(2, 4000)})
    for name in ("masked_audio", "cpc"):
        objective = OBJECTIVES.build(name, encoders)
        out = objective(batch, encoders)
        out.loss.backward()
        assert torch.isfinite(out.loss)
