"""Augmentation contract: a module ``(B, ...) tensor -> (B, ...) tensor`` with per-sample randomness.

Randomness comes from torch's global generator unless a ``torch.Generator`` is passed, so seeding torch
makes views reproducible and the trainer's saved RNG state makes resumed runs identical.
"""

from __future__ import annotations

import torch
from torch import nn


class Augmentation(nn.Module):
    """Base class; ``forward(x, generator=None)`` returns a tensor of the same batch size."""

    modality: str = ""
    #: extra small views ``views`` appends (multi-crop); only augmentations that make local crops set it
    local_crops: int = 0

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def views(self, x: torch.Tensor, n_global: int = 2, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """``n_global`` independent full views of ``x``, then ``local_crops`` small ones (multi-crop, Caron et al. 2020).

        Returns a list of (B, ...) tensors; the global views come first and share one shape, the local
        views share another. Augmentations without local crops return the ``n_global`` views only.
        """
        return [self(x, generator) for _ in range(n_global)]


def uniform(n: int, low: float, high: float, generator: torch.Generator | None, device) -> torch.Tensor:
    """(n,) samples from U[low, high)."""
    return torch.rand(n, generator=generator, device=device) * (high - low) + low


def coin(n: int, p: float, generator: torch.Generator | None, device) -> torch.Tensor:
    """(n,) booleans, each True with probability ``p``."""
    return torch.rand(n, generator=generator, device=device) < p
