"""The objective library, registered in ``mmssl.registry.OBJECTIVES``."""

from mmssl.objectives import (  # noqa: F401  (importing registers them)
    adversarial,
    clustering,
    contrastive,
    crossmodal,
    data2vec,
    dino,
    generative,
    ijepa,
    mae,
    nnclr,
    noncontrastive,
    predictive,
    temporal,
)
from mmssl.objectives.base import Objective

__all__ = ["Objective"]
