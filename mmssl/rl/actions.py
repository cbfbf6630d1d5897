"""Actions as network inputs and prediction targets, shared by auxiliary objectives and intrinsic rewards.

``ActionCodec`` turns a batch of actions into vectors (one-hot for ``Discrete``, flat floats for ``Box``)
and scores a prediction of them; ``InverseDynamicsHead`` is the inverse model g(z_t, z_{t+1}) ≈ a_t of
Pathak et al. 2017 that the ``inverse_dynamics`` objective and the ICM / E3B / NGU embeddings train.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmssl.errors import ConfigError


class ActionCodec:
    """Actions (B,) ids or (B, *shape) floats ↔ (B, dim) vectors, and the loss of predicting them.

    ``user`` names what needs the action space, for the error when it is missing or of another kind.
    """

    def __init__(self, space: gym.Space | None, user: str = "this part"):
        if isinstance(space, gym.spaces.Discrete):
            self.discrete, self.dim = True, int(space.n)
        elif isinstance(space, gym.spaces.Box):
            self.discrete, self.dim = False, int(np.prod(space.shape))
        else:
            raise ConfigError(f"{user} needs action_space, the env's Discrete or Box action space; got {space!r}")

    def encode(self, actions: torch.Tensor) -> torch.Tensor:
        """(B,) or (B, *shape) actions → (B, dim) float: one-hot ids or flattened values."""
        if self.discrete:
            return F.one_hot(actions.long().reshape(-1), self.dim).float()
        return actions.float().reshape(len(actions), -1)

    def loss(self, prediction: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of (B, n) logits for discrete actions; MSE of (B, A) values for continuous ones."""
        if self.discrete:
            return F.cross_entropy(prediction, actions.long().reshape(-1))
        return F.mse_loss(prediction, self.encode(actions))

    def metrics(self, prediction: torch.Tensor, actions: torch.Tensor) -> dict[str, float]:
        """``{"accuracy": top-1 share}`` for discrete actions; nothing for continuous ones."""
        if not self.discrete:
            return {}
        return {"accuracy": (prediction.argmax(1) == actions.long().reshape(-1)).float().mean().item()}


class InverseDynamicsHead(nn.Sequential):
    """Inverse model ``â = MLP([z_t, z_{t+1}])``: (B, D), (B, D) → (B, dim) action logits / values.

    ``loss`` is ``actions.loss`` of that prediction (cross-entropy or MSE, see ``ActionCodec``).
    """

    def __init__(self, dim: int, actions: ActionCodec, hidden_dim: int):
        super().__init__(nn.Linear(2 * dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, actions.dim))
        self.actions = actions

    def forward(self, z: torch.Tensor, z_next: torch.Tensor) -> torch.Tensor:
        return super().forward(torch.cat([z, z_next], dim=-1))

    def loss(self, z: torch.Tensor, z_next: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.actions.loss(self(z, z_next), actions)
