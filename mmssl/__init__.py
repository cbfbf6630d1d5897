"""mmssl: multimodal self-supervised learning and RL."""

__version__ = "0.1.0"
