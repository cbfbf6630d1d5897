"""The functions behind ``import mmssl``: run the three kinds of work from Python, build registered parts.

>>> import mmssl
>>> summary = mmssl.pretrain(["objective=byol", "trainer.steps=50"])  # doctest: +SKIP
>>> summary["eval/image/ssl/linear_probe"]                            # doctest: +SKIP

Each runner takes what the command line takes — a list of Hydra overrides, a ``{key: value}`` dict of them,
or an already composed config — and returns the run's summary (also in ``<run_dir>/summary.json``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from mmssl.registry import AUGMENTATIONS, DATASETS, ENCODERS, INTRINSIC_REWARDS, OBJECTIVES

if TYPE_CHECKING:
    from mmssl.augment.base import Augmentation
    from mmssl.data.base import DatasetSplits
    from mmssl.encoders.base import Encoder
    from mmssl.objectives.base import Objective
    from mmssl.rl.intrinsic.base import IntrinsicReward

Overrides = Sequence[str] | Mapping[str, Any] | DictConfig


def compose(name: str, overrides: Sequence[str] | Mapping[str, Any] = ()) -> DictConfig:
    """The resolved config ``name`` (``"pretrain"``, ``"rl"``, ``"finetune"``) with overrides applied.

    Wrong keys, options and values raise :class:`mmssl.ConfigError` with one line naming them.
    """
    from mmssl.config import compose as _compose

    return _compose(name, as_overrides(overrides))


def as_overrides(overrides: Sequence[str] | Mapping[str, Any]) -> list[str]:
    """``{"trainer.steps": 5, "objective": "byol"}`` → ``["trainer.steps=5", "objective=byol"]``."""
    if isinstance(overrides, str):
        raise TypeError("pass overrides as a list (['trainer.steps=5']) or a dict ({'trainer.steps': 5}), "
                        "not one string")
    if isinstance(overrides, Mapping):
        from hydra.core.override_parser.types import QuotedString  # noqa: F401  (Hydra's own value syntax)

        return [f"{key}={_hydra_value(value)}" for key, value in overrides.items()]
    return [str(o) for o in overrides]


def _hydra_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return "[" + ",".join(_hydra_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{_hydra_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def _config(name: str, cfg_or_overrides: Overrides) -> DictConfig:
    return cfg_or_overrides if isinstance(cfg_or_overrides, DictConfig) else compose(name, cfg_or_overrides)


def pretrain(cfg_or_overrides: Overrides = ()) -> dict[str, Any]:
    """Self-supervised pretraining, then probes: ``mmssl pretrain`` as a function. Returns the summary."""
    from mmssl.train.pretrain import run

    return run(_config("pretrain", cfg_or_overrides))


def rl(cfg_or_overrides: Overrides = ()) -> dict[str, Any]:
    """PPO with registry encoders, auxiliary objectives and intrinsic rewards: ``mmssl rl`` as a function."""
    from mmssl.rl.run import run

    return run(_config("rl", cfg_or_overrides))


def finetune(run_dir: str | Path, overrides: Sequence[str] | Mapping[str, Any] = ()) -> dict[str, Any]:
    """Few-label fine-tuning of a pretrained run (folder or checkpoint): ``mmssl finetune`` as a function."""
    from mmssl.finetune import run

    return run(run_dir, as_overrides(overrides))


def build_encoder(name: str, **options: Any) -> Encoder:
    """A registered encoder (``mmssl list encoders``), options checked against its signature."""
    return ENCODERS.build(name, **options)


def build_objective(name: str, encoders: Mapping[str, Encoder], **options: Any) -> Objective:
    """A registered objective on ``encoders`` (``{modality: Encoder}``), options checked against its signature."""
    import torch.nn as nn

    modules = encoders if isinstance(encoders, nn.ModuleDict) else nn.ModuleDict(dict(encoders))
    return OBJECTIVES.build(name, modules, **options)


def build_augmentation(name: str, **options: Any) -> Augmentation:
    """A registered batched augmentation (tensor in, tensor out)."""
    return AUGMENTATIONS.build(name, **options)


def build_dataset(name: str, **options: Any) -> DatasetSplits:
    """A registered dataset builder's splits (``DatasetSplits``)."""
    return DATASETS.build(name, **options)


def build_intrinsic_reward(name: str, *args: Any, **options: Any) -> IntrinsicReward:
    """A registered intrinsic reward (constructed as the RL runner does: observation/action spaces first)."""
    return INTRINSIC_REWARDS.build(name, *args, **options)
