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

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


def uniform(n: int, low: float, high: float, generator: torch.Generator | None, device) -> torch.Tensor:
    """(n,) samples from U[low, high)."""
    return torch.rand(n, generator=generator, device=device) * (high - low) + low


def coin(n: int, p: float, generator: torch.Generator | None, device) -> torch.Tensor:
    """(n,) booleans, each True with probability ``p``."""
    return torch.rand(n, generator=generator, device=device) < p
