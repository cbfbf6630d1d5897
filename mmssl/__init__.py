"""mmssl: multimodal self-supervised learning and RL.

The public API — everything a script or a plugin needs::

    import mmssl

    @mmssl.OBJECTIVES.register("my_objective", modalities=("image",))
    class MyObjective(mmssl.Objective): ...

    summary = mmssl.pretrain(["objective=my_objective", "trainer.steps=100"])
    run = mmssl.load_run(summary_run_dir)          # encoders and heads, ready for inference

Registries (``ENCODERS``, ``OBJECTIVES``, ``AUGMENTATIONS``, ``DATASETS``, ``INTRINSIC_REWARDS``) and their
``register`` decorators are imported eagerly (they are small); everything else loads on first use, so
``import mmssl`` stays fast and imports neither open_clip, gymnasium nor wandb.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from mmssl._version import __version__
from mmssl.errors import ConfigError, DataError, MMSSLError, ShapeError
from mmssl.registry import (
    AUGMENTATIONS,
    DATASETS,
    ENCODERS,
    INTRINSIC_REWARDS,
    OBJECTIVES,
    REGISTRIES,
    Registry,
)

register_encoder = ENCODERS.register
register_objective = OBJECTIVES.register
register_augmentation = AUGMENTATIONS.register
register_dataset = DATASETS.register
register_intrinsic_reward = INTRINSIC_REWARDS.register

#: public name → module it lives in (imported on first attribute access)
_LAZY = {
    "compose": "mmssl.api",
    "pretrain": "mmssl.api",
    "rl": "mmssl.api",
    "finetune": "mmssl.api",
    "build_encoder": "mmssl.api",
    "build_objective": "mmssl.api",
    "build_augmentation": "mmssl.api",
    "build_dataset": "mmssl.api",
    "build_intrinsic_reward": "mmssl.api",
    "load_run": "mmssl.inference",
    "load_encoders": "mmssl.inference",
    "load_plugins": "mmssl.plugins",
    "Objective": "mmssl.objectives.base",
    "Encoder": "mmssl.encoders.base",
    "Batch": "mmssl.types",
    "EncoderOutput": "mmssl.types",
    "ObjectiveOutput": "mmssl.types",
}

__all__ = [
    "AUGMENTATIONS", "DATASETS", "ENCODERS", "INTRINSIC_REWARDS", "OBJECTIVES", "REGISTRIES", "Registry",
    "register_encoder", "register_objective", "register_augmentation", "register_dataset",
    "register_intrinsic_reward",
    "compose", "pretrain", "rl", "finetune", "load_run", "load_encoders", "load_plugins",
    "build_encoder", "build_objective", "build_augmentation", "build_dataset", "build_intrinsic_reward",
    "Objective", "Encoder", "Batch", "EncoderOutput", "ObjectiveOutput",
    "ConfigError", "DataError", "MMSSLError", "ShapeError", "__version__",
]
assert set(_LAZY) <= set(__all__)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'mmssl' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:  # for type checkers and IDEs: the lazy names as ordinary imports
    from mmssl.api import (
        build_augmentation,
        build_dataset,
        build_encoder,
        build_intrinsic_reward,
        build_objective,
        compose,
        finetune,
        pretrain,
        rl,
    )
    from mmssl.encoders.base import Encoder
    from mmssl.inference import load_encoders, load_run
    from mmssl.objectives.base import Objective
    from mmssl.plugins import load_plugins
    from mmssl.types import Batch, EncoderOutput, ObjectiveOutput
