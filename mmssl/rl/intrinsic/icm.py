"""Intrinsic Curiosity Module."""

from __future__ import annotations

import gymnasium as gym
import torch
from torch import nn

from mmssl.registry import INTRINSIC_REWARDS
from mmssl.rl.intrinsic.base import IntrinsicReward
from mmssl.rl.storage import Rollout


@INTRINSIC_REWARDS.register("icm", modalities=("obs",))
class ICM(IntrinsicReward):
    """ICM (Pathak et al. 2017, "Curiosity-driven Exploration by Self-supervised Prediction").

    b_t = ½‖f(φ(s_t), a_t) − φ(s_{t+1})‖²: the error of a forward model f in the feature space φ learnt
    by an inverse model g(φ(s_t), φ(s_{t+1})) ≈ a_t. Loss: (1 − β)·L_inverse + β·L_forward with
    β = ``forward_weight`` (0.2 in the paper). Shapes: obs, next_obs (T, N, ...), actions (T, N) →
    bonus (T, N).
    """

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, num_envs: int,
                 forward_weight: float = 0.2, **common):
        super().__init__(observation_space, action_space, num_envs, **common)
        self.forward_weight = forward_weight
        self.make_inverse_dynamics()
        self.forward_model = nn.Sequential(nn.Linear(self.embed_dim + self.actions.dim, self.embed_dim), nn.ReLU(),
                                           nn.Linear(self.embed_dim, self.embed_dim))
        self.make_optimizer([self.embedding, self.inverse, self.forward_model])

    def errors(self, x, next_x, actions):
        """(B,) forward errors, (B, D) φ(s), (B, D) φ(s')."""
        phi, next_phi = self.embedding(x), self.embedding(next_x)
        predicted = self.forward_model(torch.cat([phi, self.actions.encode(actions)], -1))
        return 0.5 * (predicted - next_phi.detach()).square().sum(-1), phi, next_phi

    def batch_bonus(self, rollout: Rollout) -> torch.Tensor:
        return self.errors(*self.transitions(rollout))[0].reshape(rollout.shape)

    def learn(self, rollout: Rollout) -> dict[str, float]:
        x, next_x, actions = self.transitions(rollout)

        def loss_fn(idx):
            forward_err, phi, next_phi = self.errors(x[idx], next_x[idx], actions[idx])
            inverse = self.inverse.loss(phi, next_phi, actions[idx])
            forward = forward_err.mean()
            loss = (1 - self.forward_weight) * inverse + self.forward_weight * forward
            return loss, {"icm_inverse_loss": inverse.item(), "icm_forward_loss": forward.item()}

        return self.fit(loss_fn, len(x))
