"""The small data types every layer passes around."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from mmssl.errors import ConfigError

IMAGE, TEXT, AUDIO, OBS = "image", "text", "audio", "obs"
MODALITIES = (IMAGE, TEXT, AUDIO, OBS)


@dataclass
class EncoderOutput:
    """``pooled``: (B, dim) summary; ``tokens``: (B, N, dim) per patch/step/token, or None."""

    pooled: torch.Tensor
    tokens: torch.Tensor | None = None


@dataclass
class ObjectiveOutput:
    """A scalar ``loss`` to minimise and detached scalar ``metrics`` to log."""

    loss: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class Batch:
    """One batch of raw tensors keyed by modality, plus optional labels and extras.

    ``data["image"]``: (B, C, H, W) float in [0, 1]; ``data["audio"]``: (B, samples) waveform;
    ``data["text"]``: (B, L) token ids; ``data["obs"]``: observations (RL). ``extra`` carries whatever
    else a source provides (e.g. ``actions``, ``next_obs``, ``dones`` for rollouts).
    """

    data: dict[str, torch.Tensor]
    labels: torch.Tensor | None = None
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    def __getitem__(self, modality: str) -> torch.Tensor:
        if modality not in self.data:
            raise ConfigError(f"the batch has no modality {modality!r}; it has {sorted(self.data)}")
        return self.data[modality]

    def __contains__(self, modality: str) -> bool:
        return modality in self.data

    @property
    def size(self) -> int:
        return len(next(iter(self.data.values())))

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        move = lambda t: t.to(device, non_blocking=non_blocking)  # noqa: E731
        return Batch(
            {k: move(v) for k, v in self.data.items()},
            None if self.labels is None else move(self.labels),
            {k: move(v) if torch.is_tensor(v) else v for k, v in self.extra.items()},
        )
