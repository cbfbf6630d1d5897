"""Exploration via Elliptical Episodic Bonuses."""

from __future__ import annotations

import gymnasium as gym
import torch

from mmssl.registry import INTRINSIC_REWARDS
from mmssl.rl.intrinsic.base import IntrinsicReward, check_positive
from mmssl.rl.storage import Rollout


@INTRINSIC_REWARDS.register("e3b", modalities=("obs",))
class E3B(IntrinsicReward):
    """E3B (Henaff et al. 2022, "Exploration via Elliptical Episodic Bonuses").

    b_t = φ(s')ᵀ C_t⁻¹ φ(s') with C_t = λI + Σ_{i<t} φ(s_i)φ(s_i)ᵀ over this episode, φ trained by inverse
    dynamics. C⁻¹ is kept per env and updated by Sherman–Morrison,
    C⁻¹ ← C⁻¹ − (C⁻¹u)(C⁻¹u)ᵀ / (1 + uᵀC⁻¹u), and reset to I/λ at episode end — a bounded memory of
    N·D² numbers. Repeating a state u shrinks its bonus from b to b / (1 + b).
    Shapes: next_obs (N, ...), dones (N,) → bonus (N,).
    """

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, num_envs: int,
                 ridge: float = 0.1, **common):
        super().__init__(observation_space, action_space, num_envs, **common)
        check_positive("e3b", ridge=ridge)
        self.ridge = ridge
        self.make_inverse_dynamics()
        self.make_optimizer([self.embedding, self.inverse])
        eye = torch.eye(self.embed_dim) / ridge
        self.register_buffer("cov_inverse", eye.repeat(num_envs, 1, 1))

    def step_bonus(self, obs, actions, next_obs, dones, features):
        u = self.embedding(self.inputs(next_obs, features))  # (N, D)
        cu = torch.einsum("nij,nj->ni", self.cov_inverse, u)
        bonus = (u * cu).sum(-1)
        self.cov_inverse -= torch.einsum("ni,nj->nij", cu, cu) / (1 + bonus)[:, None, None]
        self.cov_inverse[dones.bool()] = torch.eye(self.embed_dim, device=u.device) / self.ridge
        return bonus

    def learn(self, rollout: Rollout) -> dict[str, float]:
        return self.fit_inverse(rollout, "e3b_inverse_loss")

    def memory_size(self) -> int:
        return self.cov_inverse.numel()
