"""Random Encoders for Efficient Exploration."""

from __future__ import annotations

import gymnasium as gym
import torch

from mmssl.errors import ConfigError
from mmssl.registry import INTRINSIC_REWARDS
from mmssl.rl.intrinsic.base import IntrinsicReward
from mmssl.rl.storage import Rollout


@INTRINSIC_REWARDS.register("re3", modalities=("obs",))
class RE3(IntrinsicReward):
    """RE3 (Seo et al. 2021, "State Entropy Maximization with Random Encoders for Efficient Exploration").

    y = f(s') with a fixed random encoder f; b_i = log(1 + ‖y_i − y_i^{k-NN}‖₂), the distance to the k-th
    nearest neighbour among the other states of the same env in this rollout — a particle estimate of
    the state entropy. No training; the paper decays β with ``coef_decay``. Shapes: next_obs (T, N, ...)
    → bonus (T, N).
    """

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, num_envs: int,
                 k: int = 3, **common):
        super().__init__(observation_space, action_space, num_envs, **common)
        if k < 1:
            raise ConfigError(f"re3 needs k ≥ 1 nearest neighbours, got {k}")
        self.k = k
        self.encoder = self.make_encoder()

    def batch_bonus(self, rollout: Rollout) -> torch.Tensor:
        T, N = rollout.shape
        y = self.encoder(self.rollout_inputs(rollout)).reshape(T, N, -1).transpose(0, 1)  # (N, T, D)
        dist = torch.cdist(y, y)  # (N, T, T); column 0 of the sorted distances is the point itself
        k = min(self.k, T - 1)
        if k < 1:
            return torch.zeros(T, N, device=y.device)
        kth = dist.sort(-1).values[..., k]  # (N, T)
        return torch.log1p(kth).T
