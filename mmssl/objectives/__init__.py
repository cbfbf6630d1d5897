"""The objective library, registered in ``mmssl.registry.OBJECTIVES``."""

from mmssl.objectives import contrastive, noncontrastive  # noqa: F401  (registers)
from mmssl.objectives.base import Objective

__all__ = ["Objective"]
