"""Batched augmentations (tensor in → tensor out), registered in ``mmssl.registry.AUGMENTATIONS``."""

from mmssl.augment import audio, generic, image, obs, text  # noqa: F401  (registers)
from mmssl.augment.base import Augmentation

__all__ = ["Augmentation"]
