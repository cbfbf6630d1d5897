"""Modality-agnostic augmentations: they only assume a float tensor with a leading batch dimension."""

from __future__ import annotations

import torch

from mmssl.augment.base import Augmentation
from mmssl.errors import ConfigError
from mmssl.registry import AUGMENTATIONS


@AUGMENTATIONS.register("gaussian_noise", modalities=("image", "audio", "obs"))
class GaussianNoise(Augmentation):
    """Additive Gaussian noise ``x + std·ε``, ε ~ N(0, I), on any float tensor (B, ...); optional clamp.

    The noise is drawn from torch's generator (or ``generator``), so seeded runs make identical views.
    ``clamp=[0, 1]`` keeps images in range; vector observations usually want no clamp.
    """

    def __init__(self, std: float = 0.1, clamp: list[float] | None = None):
        super().__init__()
        if std < 0:
            raise ConfigError(f"gaussian_noise std must be ≥ 0, got {std}")
        if clamp is not None and (len(clamp) != 2 or clamp[0] >= clamp[1]):
            raise ConfigError(f"gaussian_noise clamp must be [low, high] with low < high, got {clamp}")
        self.std, self.clamp = std, None if clamp is None else (float(clamp[0]), float(clamp[1]))

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if not x.is_floating_point():
            raise ConfigError(f"gaussian_noise needs float inputs, got {x.dtype} (token ids cannot take noise); "
                              "use a text augmentation or augment=identity")
        out = x + self.std * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return out.clamp(*self.clamp) if self.clamp else out
