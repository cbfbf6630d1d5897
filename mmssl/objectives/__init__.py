"""The objective library, registered in ``mmssl.registry.OBJECTIVES``."""

from mmssl.objectives import contrastive, crossmodal, generative, noncontrastive, predictive, temporal  # noqa: F401
from mmssl.objectives import data2vec, ijepa, mae  # noqa: F401
from mmssl.objectives.base import Objective

__all__ = ["Objective"]
