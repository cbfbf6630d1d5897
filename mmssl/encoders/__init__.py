"""Encoders for every modality, registered in ``mmssl.registry.ENCODERS``."""

from mmssl.encoders import audio, goal_map, obs, text, vision, vit  # noqa: F401  (registers)
from mmssl.encoders.base import Encoder
from mmssl.encoders.heads import mlp

__all__ = ["Encoder", "mlp"]
