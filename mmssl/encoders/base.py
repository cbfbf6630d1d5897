"""The Encoder contract: an ``nn.Module`` with ``modality`` and ``dim`` returning ``EncoderOutput``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from mmssl.errors import ConfigError, ShapeError
from mmssl.types import IMAGE, EncoderOutput


class Encoder(nn.Module):
    """Base class: subclasses set ``modality`` and ``dim`` and implement ``encode``.

    ``forward(x) -> EncoderOutput(pooled=(B, dim), tokens=(B, N, dim) or None)``.
    """

    modality: str = ""
    dim: int = 0
    reads_dict: bool = False  # True for encoders of dict observations (one key per modality)

    def forward(self, x: torch.Tensor) -> EncoderOutput:
        if isinstance(x, dict) and not self.reads_dict:
            raise ShapeError(f"{type(self).__name__} reads a tensor, got a dict observation with keys {sorted(x)}; "
                             "use an encoder for dict observations (dict, goal_map)")
        self.check_input(x)
        return self.encode(x)

    def encode(self, x: torch.Tensor) -> EncoderOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a one-line ``ShapeError`` when ``x`` cannot be read; subclasses refine."""

    def expect(self, x: torch.Tensor, ndim: int, what: str, channels: int | None = None) -> None:
        """Shared shape check: ``ndim`` dimensions and, optionally, ``channels`` at dim 1."""
        if x.ndim != ndim or (channels is not None and x.shape[1] != channels):
            raise ShapeError(
                f"{type(self).__name__} expects {what}, got a tensor of shape {tuple(x.shape)}; "
                "check the data's shape or the encoder's in_channels"
            )


def open_clip_config(arch: str) -> dict[str, Any]:
    """open_clip's model config for ``arch`` (its ``embed_dim``, ``vision_cfg``, ``text_cfg``), or a one-line error."""
    import open_clip

    if arch not in open_clip.list_models():
        from mmssl.registry import _suggest

        raise ConfigError(f"unknown open_clip architecture {arch!r}; {_suggest(arch, open_clip.list_models())}")
    config: dict[str, Any] = open_clip.get_model_config(arch)  # open_clip is untyped; a dict for listed names
    return config


class ImageEncoder(Encoder):
    """An image encoder: reads (B, in_channels, H, W) floats in [0, 1] and normalises them with ``mean``/``std``."""

    modality = IMAGE
    mean: torch.Tensor
    std: torch.Tensor

    def _set_norm(self, in_channels: int, mean: Sequence[float] | float, std: Sequence[float] | float) -> None:
        self.in_channels = in_channels

        def as_t(v: Sequence[float] | float) -> torch.Tensor:  # a 3-channel statistic on a 1-channel input becomes its grey average
            t = torch.as_tensor(v, dtype=torch.float32).flatten()
            return (t.mean(0, keepdim=True) if len(t) != in_channels else t).expand(in_channels).reshape(1, -1, 1, 1)

        self.register_buffer("mean", as_t(mean).clone(), persistent=False)
        self.register_buffer("std", as_t(std).clone(), persistent=False)

    def check_input(self, x: torch.Tensor) -> None:
        self.expect(x, 4, f"images (B, {self.in_channels}, H, W)", channels=self.in_channels)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std
