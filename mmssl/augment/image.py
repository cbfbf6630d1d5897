"""Batched image augmentations on (B, C, H, W) tensors in [0, 1], each sample with its own parameters.

torchvision.transforms.v2 draws one set of parameters per call, i.e. the same crop for a whole batch;
SimCLR needs independent views per sample, and a per-sample loop of v2 calls is the bottleneck that
makes PIL pipelines slow. So these ops draw (B,) parameters and apply them in a few batched kernels:
crops, flips and rotations as one ``affine_grid``/``grid_sample``, colour as per-sample broadcasts,
blur as one grouped convolution.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mmssl.augment.base import Augmentation, coin, uniform
from mmssl.errors import ConfigError
from mmssl.registry import AUGMENTATIONS
from mmssl.types import IMAGE

_LUMA = (0.299, 0.587, 0.114)


def random_resized_crop(x: torch.Tensor, size: tuple[int, int], scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                        flip_p: float = 0.0, degrees: float = 0.0, generator=None) -> torch.Tensor:
    """Per-sample crop of ``scale`` area fraction and ``ratio`` aspect, resized to ``size``.

    Optional horizontal flip and rotation (±``degrees``) are folded into the same affine map.
    Coordinates follow ``affine_grid``'s [-1, 1] convention; crops stay inside the image.
    """
    b, dev = x.shape[0], x.device
    area = uniform(b, *scale, generator, dev)
    log_r = uniform(b, math.log(ratio[0]), math.log(ratio[1]), generator, dev)
    aspect = torch.exp(log_r)
    w = torch.sqrt(area * aspect).clamp(max=1.0)  # fraction of the width
    h = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = (torch.rand(b, generator=generator, device=dev) * 2 - 1) * (1 - w)
    cy = (torch.rand(b, generator=generator, device=dev) * 2 - 1) * (1 - h)
    sx = torch.where(coin(b, flip_p, generator, dev), -w, w)
    angle = uniform(b, -degrees, degrees, generator, dev) * (math.pi / 180) if degrees else torch.zeros(b, device=dev)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([
        torch.stack([sx * cos, -h * sin, cx], dim=1),
        torch.stack([sx * sin, h * cos, cy], dim=1),
    ], dim=1)
    grid = F.affine_grid(theta.to(x.dtype), [b, x.shape[1], *size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) → (B, 1, H, W) brightness: ITU-R 601 luma for RGB, the input for one channel, else the channel mean."""
    if x.shape[1] == 1:
        return x
    if x.shape[1] != 3:  # 2 or 4+ channels: no luma weights, the channel mean serves as brightness
        return x.mean(dim=1, keepdim=True)
    w = torch.tensor(_LUMA, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def color_jitter(x: torch.Tensor, brightness: float, contrast: float, saturation: float, hue: float,
                 p: float = 0.8, generator=None) -> torch.Tensor:
    """Per-sample brightness, contrast, saturation and hue jitter (fixed order), applied with probability p.

    Hue is a rotation about the grey axis in YIQ space — a 3×3 matrix per sample instead of an
    RGB→HSV→RGB round trip.
    """
    b, dev = x.shape[0], x.device
    apply = coin(b, p, generator, dev).view(b, 1, 1, 1)
    shape = (b, 1, 1, 1)
    out = x * uniform(b, 1 - brightness, 1 + brightness, generator, dev).view(shape)
    mean = grayscale(out).mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * uniform(b, 1 - contrast, 1 + contrast, generator, dev).view(shape) + mean
    if x.shape[1] == 3:
        g = grayscale(out)
        out = (out - g) * uniform(b, 1 - saturation, 1 + saturation, generator, dev).view(shape) + g
        if hue > 0:
            out = _rotate_hue(out, uniform(b, -hue, hue, generator, dev) * 2 * math.pi)
    out = out.clamp(0, 1)
    return torch.where(apply, out, x)


_RGB2YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def _rotate_hue(x: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    cos, sin = torch.cos(angle), torch.sin(angle)
    one, zero = torch.ones_like(cos), torch.zeros_like(cos)
    rot = torch.stack([
        torch.stack([one, zero, zero], -1),
        torch.stack([zero, cos, -sin], -1),
        torch.stack([zero, sin, cos], -1),
    ], dim=1)  # (B, 3, 3)
    to_yiq = _RGB2YIQ.to(x)
    mat = torch.linalg.inv(to_yiq) @ rot @ to_yiq  # (B, 3, 3)
    return torch.einsum("bij,bjhw->bihw", mat, x)


def random_grayscale(x: torch.Tensor, p: float, generator=None) -> torch.Tensor:
    if x.shape[1] == 1 or p <= 0:
        return x
    mask = coin(x.shape[0], p, generator, x.device).view(-1, 1, 1, 1)
    return torch.where(mask, grayscale(x).expand_as(x), x)


def gaussian_blur(x: torch.Tensor, sigma: tuple[float, float], p: float, kernel_frac: float = 0.1,
                  generator=None) -> torch.Tensor:
    """Per-sample Gaussian blur with sigma ~ U(sigma) applied with probability p (separable, grouped conv)."""
    if p <= 0:
        return x
    b, c, h, w = x.shape
    k = max(3, int(kernel_frac * min(h, w)) // 2 * 2 + 1)
    s = uniform(b, *sigma, generator, x.device)
    s = torch.where(coin(b, p, generator, x.device), s, torch.full_like(s, 1e-3))
    r = torch.arange(k, device=x.device, dtype=x.dtype) - k // 2
    kern = torch.exp(-(r.view(1, -1) ** 2) / (2 * s.view(-1, 1).to(x.dtype) ** 2))
    kern = (kern / kern.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (B*C, k)
    y = x.reshape(1, b * c, h, w)
    y = F.conv2d(F.pad(y, (k // 2, k // 2, 0, 0), mode="reflect"), kern.view(b * c, 1, 1, k), groups=b * c)
    y = F.conv2d(F.pad(y, (0, 0, k // 2, k // 2), mode="reflect"), kern.view(b * c, 1, k, 1), groups=b * c)
    return y.view(b, c, h, w)


@AUGMENTATIONS.register("simclr", modalities=(IMAGE,))
class SimCLRAugment(Augmentation):
    """SimCLR's view pipeline, batched: resized crop (+flip, +rotation), colour jitter, grayscale, blur, noise.

    Multi-crop (SwAV, Caron et al. 2020; used by DINO, SwAV, DeepCluster-v2): with ``local_crops`` = N > 0,
    ``views(x, 2)`` returns 2 global views (``crop_scale``, ``size``) and N local views cropped from
    ``local_crop_scale`` of the image and resized to ``local_size`` (default: the official 96/224 of the
    global size), each through the same colour pipeline. ``forward`` always makes one global view, so
    two-view objectives are unaffected by the option.
    """

    modality = IMAGE

    def __init__(self, size: int | None = None, crop_scale: tuple[float, float] = (0.2, 1.0),
                 flip_p: float = 0.5, degrees: float = 0.0, jitter: float = 0.4, hue: float = 0.1,
                 jitter_p: float = 0.8, grayscale_p: float = 0.2, blur_p: float = 0.0,
                 blur_sigma: tuple[float, float] = (0.1, 2.0), noise_std: float = 0.0, local_crops: int = 0,
                 local_size: int | None = None, local_crop_scale: tuple[float, float] = (0.05, 0.4)):
        super().__init__()
        if local_crops < 0:
            raise ConfigError(f"simclr augmentation local_crops must be ≥ 0, got {local_crops}")
        if local_size is not None and local_size < 1:
            raise ConfigError(f"simclr augmentation local_size must be ≥ 1, got {local_size}")
        if not 0 < local_crop_scale[0] <= local_crop_scale[1] <= 1:
            raise ConfigError(f"simclr augmentation local_crop_scale must be [low, high] in (0, 1], got {local_crop_scale}")
        self.size, self.crop_scale, self.flip_p, self.degrees = size, tuple(crop_scale), flip_p, degrees
        self.jitter, self.hue, self.jitter_p = jitter, hue, jitter_p
        self.grayscale_p, self.blur_p, self.blur_sigma, self.noise_std = grayscale_p, blur_p, tuple(blur_sigma), noise_std
        self.local_crops, self.local_size, self.local_crop_scale = local_crops, local_size, tuple(local_crop_scale)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        size = (self.size, self.size) if self.size else tuple(x.shape[-2:])
        return self._view(x, size, self.crop_scale, generator)

    def local_view(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One small view (B, C, local_size, local_size) of ``local_crop_scale`` of each image."""
        if self.local_size:
            size = (self.local_size, self.local_size)
        else:  # the official 96-pixel local crops of 224-pixel global ones
            h, w = (self.size, self.size) if self.size else tuple(x.shape[-2:])
            size = (max(1, round(h * 96 / 224)), max(1, round(w * 96 / 224)))
        return self._view(x, size, self.local_crop_scale, generator)

    def views(self, x: torch.Tensor, n_global: int = 2, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        return [self(x, generator) for _ in range(n_global)] + [self.local_view(x, generator) for _ in range(self.local_crops)]

    def _view(self, x, size, scale, generator):
        x = random_resized_crop(x, size, scale, flip_p=self.flip_p, degrees=self.degrees, generator=generator)
        if self.jitter > 0:
            x = color_jitter(x, self.jitter, self.jitter, self.jitter, self.hue, self.jitter_p, generator)
        x = random_grayscale(x, self.grayscale_p, generator)
        x = gaussian_blur(x, self.blur_sigma, self.blur_p, generator=generator)
        if self.noise_std > 0:
            x = (x + self.noise_std * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)).clamp(0, 1)
        return x


@AUGMENTATIONS.register("identity")
class Identity(Augmentation):
    """No augmentation: returns the input unchanged (for objectives whose views come from elsewhere)."""

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return x
