"""Multi-view helpers shared by the multi-crop objectives (DINO, SwAV, DeepCluster-v2).

Views come from the augmentation (``Augmentation.views``: 2 global views, then its local crops when it
makes them), so multi-crop is an option of the augmentation, usable by any objective. Views of one
resolution are encoded in one call, as the official multi-crop wrappers do (DINO's
``MultiCropWrapper``, SwAV's ``forward``): a BatchNorm encoder then sees per-resolution statistics.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from mmssl.errors import ConfigError
from mmssl.registry import AUGMENTATIONS

#: augmentation options that make local views (see ``SimCLRAugment``)
MULTI_CROP_KEYS = ("local_crops", "local_size", "local_crop_scale")


def build_multi_crop_augment(objective, augment: str | None, augment_kwargs: Mapping | None,
                             multi_crop: Mapping | None) -> nn.Module:
    """``objective.build_augment`` with the ``multi_crop`` options (local_crops, local_size, local_crop_scale) merged in.

    Only augmentations that make local views accept them (the image ``simclr`` augmentation); asking
    another for local crops is a config error that says to drop ``multi_crop``, while
    ``multi_crop.local_crops=0`` is accepted everywhere and ignored.
    """
    multi_crop = dict(multi_crop or {})
    name = getattr(objective, "registry_name", type(objective).__name__)
    unknown = sorted(set(multi_crop) - set(MULTI_CROP_KEYS))
    if unknown:
        raise ConfigError(f"{name} multi_crop has unknown key(s) {unknown}; accepted: {list(MULTI_CROP_KEYS)}")
    aug_name = augment or _default_augment(objective.modality)
    if "local_crops" in {p.name for p in AUGMENTATIONS.parameters(aug_name)}:
        return objective.build_augment(augment, {**dict(augment_kwargs or {}), **multi_crop})
    if multi_crop.get("local_crops", 0):
        raise ConfigError(f"{name}: multi-crop (local views) is an option of the image augmentation; augmentation "
                          f"{aug_name!r} for modality {objective.modality!r} has none; set "
                          f"objective.{name}.multi_crop=null")
    return objective.build_augment(augment, augment_kwargs)


def make_views(augment: nn.Module, x: torch.Tensor, n_global: int = 2) -> list[torch.Tensor]:
    """``augment.views(x, n_global)`` (global views, then any local crops); plain modules give ``n_global`` calls."""
    if hasattr(augment, "views"):
        return augment.views(x, n_global)
    return [augment(x) for _ in range(n_global)]


def _default_augment(modality: str) -> str:
    from mmssl.objectives.base import DEFAULT_AUGMENT

    return DEFAULT_AUGMENT.get(modality, "identity")


def encode_views(encoder: nn.Module, views: Sequence[torch.Tensor]) -> torch.Tensor:
    """Pooled features (V·B, D) of ``views`` (V tensors (B, ...)), one encoder call per run of equal shapes."""
    out, start = [], 0
    while start < len(views):
        end = start + 1
        while end < len(views) and views[end].shape == views[start].shape:
            end += 1
        out.append(encoder(torch.cat(list(views[start:end]))).pooled)
        start = end
    return torch.cat(out)
