"""gaussian_noise: seeded, right scale, any float modality, refuses token ids."""

import pytest
import torch

from mmssl.errors import ConfigError
from mmssl.registry import AUGMENTATIONS


def test_gaussian_noise_scale_seed_and_clamp():
    noise = AUGMENTATIONS.build("gaussian_noise", std=0.5)
    x = torch.zeros(4000, 3)
    a = noise(x, generator=torch.Generator().manual_seed(1))
    b = noise(x, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == x.shape
    assert a.std().item() == pytest.approx(0.5, rel=0.05) and abs(a.mean().item()) < 0.02
    clamped = AUGMENTATIONS.build("gaussian_noise", std=1.0, clamp=[0.0, 1.0])(torch.rand(8, 1, 4, 4))
    assert clamped.min() >= 0 and clamped.max() <= 1


def test_gaussian_noise_errors_are_actionable():
    with pytest.raises(ConfigError, match="token ids"):
        AUGMENTATIONS.build("gaussian_noise")(torch.ones(2, 5, dtype=torch.long))
    with pytest.raises(ConfigError, match="std must be"):
        AUGMENTATIONS.build("gaussian_noise", std=-1.0)
