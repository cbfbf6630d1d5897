"""The Objective contract.

An objective is an ``nn.Module`` registered by name; the decorator declares the modalities it can read
and whether it reads sequences, ``@OBJECTIVES.register("simclr", modalities=(...), sequence=False)``,
and sets them as the class's ``modalities`` and ``sequence``. It owns its heads (projector,
predictor, decoder, momentum copies) and its view-making augmentation; ``forward(batch, encoders)``
returns ``ObjectiveOutput(loss, metrics)``.

Objectives are built with the encoders they will train, ``OBJECTIVES.build(name, encoders, **cfg)``,
so heads can be sized from ``encoder.dim`` and momentum copies made up front; the live encoders are
passed again to ``forward`` (objectives never keep a reference, so an encoder's parameters have a
single owner).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from mmssl.encoders.base import Encoder
from mmssl.errors import ConfigError
from mmssl.registry import AUGMENTATIONS
from mmssl.types import Batch, ObjectiveOutput

if TYPE_CHECKING:  # importing mmssl.augment registers every augmentation: not at import time
    from mmssl.augment.base import Augmentation

#: the augmentation each modality gets when an objective is not told otherwise
DEFAULT_AUGMENT = {"image": "simclr", "audio": "audio_default", "text": "text_default", "obs": "random_shift"}


class Objective(nn.Module):
    """Base class for every objective; see the module docstring for the contract."""

    modalities: tuple[str, ...] = ()
    sequence: bool = False

    def __init__(self, encoders: Mapping[str, Encoder], modality: str | None = None) -> None:
        super().__init__()
        self.modality = self.resolve_modality(encoders, modality)

    # -- construction helpers -------------------------------------------------------------------
    @classmethod
    def resolve_modality(cls, encoders: Mapping[str, Encoder], modality: str | None) -> str:
        name = getattr(cls, "registry_name", cls.__name__)
        if modality is None:
            fitting = [m for m in encoders if m in cls.modalities]
            if not fitting:
                raise ConfigError(
                    f"objective {name!r} reads {list(cls.modalities)} but the encoders are for {sorted(encoders)}"
                )
            modality = fitting[0]
        if modality not in cls.modalities:
            raise ConfigError(f"objective {name!r} cannot read modality {modality!r}; it accepts {list(cls.modalities)}")
        if modality not in encoders:
            raise ConfigError(f"objective {name!r} needs an encoder for {modality!r}; configured: {sorted(encoders)}")
        return modality

    def build_augment(self, augment: str | None, augment_kwargs: Mapping[str, Any] | None = None) -> Augmentation:
        """The registered augmentation ``augment`` (or this modality's default) built with its kwargs."""
        name = augment or DEFAULT_AUGMENT.get(self.modality, "identity")
        return AUGMENTATIONS.build(name, **dict(augment_kwargs or {}))

    @staticmethod
    def momentum_copy(module: nn.Module) -> nn.Module:
        """A frozen deep copy for EMA targets (BYOL, MoCo)."""
        target = copy.deepcopy(module)
        for p in target.parameters():
            p.requires_grad_(False)
        return target

    # -- runtime ----------------------------------------------------------------------------------
    def inputs(self, batch: Batch) -> torch.Tensor:
        """This objective's modality from ``batch``, with an actionable error when it is missing."""
        if self.modality not in batch:
            raise ConfigError(
                f"objective {getattr(self, 'registry_name', type(self).__name__)!r} needs modality "
                f"{self.modality!r} but the batch has {sorted(batch.data)}"
            )
        return batch[self.modality]

    def forward(self, batch: Batch, encoders: Mapping[str, Encoder]) -> ObjectiveOutput:  # pragma: no cover
        raise NotImplementedError

    def after_step(self, encoders: Mapping[str, Encoder], progress: float) -> None:
        """Called after each optimiser step with training progress in [0, 1] (EMA updates live here)."""


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """``target ← m·target + (1-m)·online`` for parameters; buffers (BatchNorm statistics) are copied."""
    t_params: list[torch.Tensor] = list(target.parameters())
    o_params: list[torch.Tensor] = list(online.parameters())
    torch._foreach_mul_(t_params, momentum)
    torch._foreach_add_(t_params, o_params, alpha=1 - momentum)
    for tb, ob in zip(target.buffers(), online.buffers()):
        tb.copy_(ob)


def cosine_momentum(base: float, progress: float) -> float:
    """BYOL's schedule: ``1 - (1 - base)·(cos(π·progress) + 1)/2``, from ``base`` up to 1."""
    import math

    return 1 - (1 - base) * (math.cos(math.pi * progress) + 1) / 2
