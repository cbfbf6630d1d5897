"""Batched augmentations (tensor in → tensor out), registered in ``mmssl.registry.AUGMENTATIONS``."""

from mmssl.augment import image  # noqa: F401  (registers)
from mmssl.augment.base import Augmentation

__all__ = ["Augmentation"]
