"""Pixel-observation augmentations for RL (modality ``obs``), batched and dtype-preserving.

Both work on (B, C, H, W) (or (B, H, W, C) with ``channels_last``) of any dtype, so uint8 frames stay
uint8 and the encoder scales them. Shifts are integer, so they are done by exact gathers rather than
``grid_sample`` interpolation (which DrQ uses only to realise the same integer shift).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmssl.augment.base import Augmentation
from mmssl.errors import ConfigError, ShapeError
from mmssl.registry import AUGMENTATIONS


def _as_nchw(x: torch.Tensor, channels_last: bool, name: str) -> torch.Tensor:
    if x.ndim != 4:
        raise ShapeError(f"{name} expects pixel observations (B, C, H, W), got shape {tuple(x.shape)}; "
                         "vector observations take augment=gaussian_noise (or identity)")
    return x.permute(0, 3, 1, 2) if channels_last else x


def crop_at(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Per-sample crops of (B, C, H, W) at integer offsets ``top``, ``left`` (B,) → (B, C, h, w)."""
    b = x.shape[0]
    rows = top.view(b, 1) + torch.arange(size[0], device=x.device)  # (B, h)
    cols = left.view(b, 1) + torch.arange(size[1], device=x.device)  # (B, w)
    batch = torch.arange(b, device=x.device).view(b, 1, 1)
    out = x.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (B, h, w, C)
    return out.permute(0, 3, 1, 2)


@AUGMENTATIONS.register("random_shift", modalities=("obs", "image"))
class RandomShift(Augmentation):
    """DrQ's random shift (Kostrikov et al. 2021; Yarats et al. 2022): replicate-pad by ``pad``, crop back to H×W.

    Each sample moves by its own integer (dy, dx) ∈ [-pad, pad]²; output shape and dtype equal the input's.
    """

    modality = "obs"

    def __init__(self, pad: int = 4, channels_last: bool = False):
        super().__init__()
        if pad < 0:
            raise ConfigError(f"random_shift pad must be ≥ 0, got {pad}")
        self.pad, self.channels_last = pad, channels_last

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        y = _as_nchw(x, self.channels_last, "random_shift")
        if self.pad == 0:
            return x
        b, _, h, w = y.shape
        # replicate padding is not implemented for integer tensors: pad as float, gather, cast back (exact)
        padded = F.pad(y.float(), (self.pad,) * 4, mode="replicate")
        top = torch.randint(0, 2 * self.pad + 1, (b,), generator=generator, device=x.device)
        left = torch.randint(0, 2 * self.pad + 1, (b,), generator=generator, device=x.device)
        out = crop_at(padded, top, left, (h, w)).to(x.dtype)
        return out.permute(0, 2, 3, 1) if self.channels_last else out


@AUGMENTATIONS.register("random_crop", modalities=("obs", "image"))
class RandomCrop(Augmentation):
    """CURL's random crop (Laskin et al. 2020): a ``size``×``size`` window at a per-sample random position.

    (B, C, H, W) → (B, C, size, size); the encoder must accept the smaller image (``image_size=size``).
    """

    modality = "obs"

    def __init__(self, size: int = 64, channels_last: bool = False):
        super().__init__()
        if size < 1:
            raise ConfigError(f"random_crop size must be ≥ 1, got {size}")
        self.size, self.channels_last = size, channels_last

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        y = _as_nchw(x, self.channels_last, "random_crop")
        b, _, h, w = y.shape
        if self.size > min(h, w):
            raise ShapeError(f"random_crop size {self.size} exceeds the observation size {h}×{w}; lower size")
        top = torch.randint(0, h - self.size + 1, (b,), generator=generator, device=x.device)
        left = torch.randint(0, w - self.size + 1, (b,), generator=generator, device=x.device)
        out = crop_at(y, top, left, (self.size, self.size))
        return out.permute(0, 2, 3, 1) if self.channels_last else out
