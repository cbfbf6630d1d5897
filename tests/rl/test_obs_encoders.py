"""Observation encoders: shapes, scaling, dict fusion, and one-line errors when encoder and space do not fit."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from mmssl.encoders.obs import encoder_for_space, sample_batch
from mmssl.errors import ConfigError

VECTOR = gym.spaces.Box(-1, 1, (4,), np.float32)
PIXELS = gym.spaces.Box(0, 255, (3, 40, 40), np.uint8)
GRID = gym.spaces.Box(0, 10, (7, 7, 3), np.uint8)
DICT = gym.spaces.Dict({"image": GRID, "direction": gym.spaces.Discrete(4), "state": VECTOR})


@pytest.mark.parametrize("space,spec", [
    (VECTOR, {"name": "mlp", "dim": 32}),
    (PIXELS, {"name": "nature_cnn", "dim": 32}),
    (PIXELS, {"name": "impala_cnn", "dim": 32, "channels": [8, 8]}),
    (GRID, {"name": "minigrid", "dim": 32}),
    (PIXELS, {"name": "convnet", "width": 4}),
    (DICT, {"name": "dict", "dim": 32, "encoders": {"image": {"name": "minigrid"}, "direction": {"name": "one_hot"},
                                                     "state": {"name": "mlp"}}}),
])
def test_encoder_for_space_builds_and_encodes(space, spec):
    encoder = encoder_for_space(space, spec)
    out = encoder(sample_batch(space, n=3))
    assert encoder.modality == "obs"
    assert out.pooled.shape == (3, encoder.dim)
    assert torch.isfinite(out.pooled).all()


def test_dict_encoder_keeps_one_sub_encoder_per_key():
    encoder = encoder_for_space(DICT, {"name": "dict", "encoders": {"image": {"name": "minigrid"},
                                                                    "state": {"name": "mlp"}}})
    assert set(encoder.encoders) == {"image", "state"}
    grads = encoder(sample_batch(DICT)).pooled.sum()
    grads.backward()
    assert all(p.grad is not None for p in encoder.encoders["state"].parameters())


def test_pixel_encoders_scale_uint8_inside():
    encoder = encoder_for_space(PIXELS, {"name": "nature_cnn"})
    x = torch.randint(0, 256, (2, 3, 40, 40), dtype=torch.uint8)
    assert torch.allclose(encoder(x).pooled, encoder(x.float() / 255).pooled, atol=1e-6)


@pytest.mark.parametrize("space,spec,expects", [
    (VECTOR, {"name": "nature_cnn"}, "(B, 4, H, W)"),
    (PIXELS, {"name": "minigrid"}, "(B, 7, 7, 3)"),
    (PIXELS, {"name": "mlp", "in_dim": 10}, "(B, 10)"),
    (VECTOR, {"name": "dict", "encoders": {}}, "Dict observation space"),
])
def test_mismatch_fails_with_one_line_naming_encoder_and_space(space, spec, expects):
    with pytest.raises(ConfigError) as info:
        encoder_for_space(space, spec)
    message = str(info.value)
    assert "\n" not in message
    assert spec["name"] in message and expects in message
    assert "Box(" in message  # the env's observation space is named


def test_image_encoder_reads_channels_last_pixels():
    space = gym.spaces.Box(0, 255, (16, 16, 3), np.uint8)
    encoder = encoder_for_space(space, {"name": "convnet", "width": 4})
    assert encoder.channels_last and encoder.inner.in_channels == 3
    assert encoder(sample_batch(space)).pooled.shape == (2, encoder.dim)
