"""Batched waveform augmentations on (B, samples) tensors, each clip with its own random parameters.

torchaudio's transforms draw one setting per call and its resampler needs one integer rate pair per
call, so a per-clip speed change would mean B separate resample calls. Instead every op here draws
(B,) parameters and applies them in one batched kernel: gain and noise as broadcasts, time shift as
one gather, speed (tempo and pitch together, like ``sox speed``) as one linear ``grid_sample``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmssl.augment.base import Augmentation, coin, uniform
from mmssl.registry import AUGMENTATIONS
from mmssl.types import AUDIO


def random_gain(x: torch.Tensor, db: tuple[float, float] = (-6.0, 6.0), p: float = 1.0, generator=None) -> torch.Tensor:
    """Scale each clip by ``10^(g/20)`` with ``g ~ U(db)`` decibels, with probability ``p``."""
    b = x.shape[0]
    g = uniform(b, *db, generator, x.device)
    g = torch.where(coin(b, p, generator, x.device), g, torch.zeros_like(g))
    return x * (10 ** (g / 20)).to(x.dtype).unsqueeze(1)


def add_noise(x: torch.Tensor, snr_db: tuple[float, float] = (10.0, 30.0), p: float = 0.5, generator=None) -> torch.Tensor:
    """Add white Gaussian noise at a per-clip signal-to-noise ratio ``U(snr_db)`` dB, with probability ``p``.

    noise std = sqrt(mean(x²) / 10^(snr/10)), so quiet and loud clips get the same relative noise.
    """
    b = x.shape[0]
    snr = uniform(b, *snr_db, generator, x.device)
    std = torch.sqrt(x.pow(2).mean(dim=1) / 10 ** (snr / 10))
    std = torch.where(coin(b, p, generator, x.device), std, torch.zeros_like(std))
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x + noise * std.to(x.dtype).unsqueeze(1)


def time_shift(x: torch.Tensor, max_fraction: float = 0.1, p: float = 0.5, generator=None) -> torch.Tensor:
    """Shift each clip by up to ±``max_fraction`` of its length (zeros fill the gap, no wrap-around)."""
    b, n = x.shape
    max_shift = int(max_fraction * n)
    if max_shift == 0:
        return x
    shift = torch.randint(-max_shift, max_shift + 1, (b,), generator=generator, device=x.device)
    shift = torch.where(coin(b, p, generator, x.device), shift, torch.zeros_like(shift))
    src = torch.arange(n, device=x.device).unsqueeze(0) - shift.unsqueeze(1)  # (B, n): output t reads x[t - shift]
    valid = (src >= 0) & (src < n)
    return torch.where(valid, x.gather(1, src.clamp(0, n - 1)), torch.zeros((), dtype=x.dtype, device=x.device))


def change_speed(x: torch.Tensor, factors: tuple[float, float] = (0.85, 1.15), p: float = 0.5,
                 generator=None) -> torch.Tensor:
    """Play each clip ``f ~ U(factors)`` times faster (pitch rises by the same factor), length kept.

    Output sample t reads the input at position ``f·t`` by linear interpolation — resampling by 1/f —
    with zeros past the clip's end (f > 1 shortens the sound, f < 1 crops its tail).
    """
    b, n = x.shape
    f = uniform(b, *factors, generator, x.device)
    f = torch.where(coin(b, p, generator, x.device), f, torch.ones_like(f))
    pos = torch.arange(n, device=x.device, dtype=x.dtype).unsqueeze(0) * f.to(x.dtype).unsqueeze(1)  # (B, n)
    grid_x = (2 * pos + 1) / n - 1  # align_corners=False pixel centres
    grid = torch.stack([grid_x, torch.zeros_like(grid_x)], dim=-1).unsqueeze(1)  # (B, 1, n, 2)
    return F.grid_sample(x.view(b, 1, 1, n), grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False).view(b, n)


@AUGMENTATIONS.register("audio_default", modalities=(AUDIO,))
class AudioDefault(Augmentation):
    """Waveform views: speed/pitch change, time shift, gain and additive noise, each per clip with its probability."""

    modality = AUDIO

    def __init__(self, speed: tuple[float, float] = (0.85, 1.15), speed_p: float = 0.5, shift: float = 0.1,
                 shift_p: float = 0.5, gain_db: tuple[float, float] = (-6.0, 6.0), gain_p: float = 0.8,
                 snr_db: tuple[float, float] = (10.0, 30.0), noise_p: float = 0.5):
        super().__init__()
        self.speed, self.speed_p, self.shift, self.shift_p = tuple(speed), speed_p, shift, shift_p
        self.gain_db, self.gain_p, self.snr_db, self.noise_p = tuple(gain_db), gain_p, tuple(snr_db), noise_p

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x = change_speed(x, self.speed, self.speed_p, generator)
        x = time_shift(x, self.shift, self.shift_p, generator)
        x = random_gain(x, self.gain_db, self.gain_p, generator)
        return add_noise(x, self.snr_db, self.noise_p, generator)
