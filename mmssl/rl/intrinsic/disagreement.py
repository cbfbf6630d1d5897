"""Self-supervised exploration via disagreement."""

from __future__ import annotations

import gymnasium as gym
import torch
from torch import nn

from mmssl.errors import ConfigError
from mmssl.registry import INTRINSIC_REWARDS
from mmssl.rl.intrinsic.base import IntrinsicReward
from mmssl.rl.storage import Rollout


@INTRINSIC_REWARDS.register("disagreement", modalities=("obs",))
class Disagreement(IntrinsicReward):
    """Disagreement (Pathak, Gandhi & Gupta 2019, "Self-Supervised Exploration via Disagreement").

    An ensemble of K forward models f_k(φ(s_t), a_t) ≈ φ(s_{t+1}) on a fixed random embedding φ; the
    bonus is their disagreement b_t = mean_d Var_k[f_k(φ(s_t), a_t)]_d, which (unlike a prediction
    error) stays low on stochastic but well-learnt transitions. Each model trains on its own bootstrap
    mask of the batch. Shapes: obs, next_obs (T, N, ...), actions (T, N) → bonus (T, N).
    """

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, num_envs: int,
                 ensemble_size: int = 5, **common):
        super().__init__(observation_space, action_space, num_envs, **common)
        if ensemble_size < 2:
            raise ConfigError(f"disagreement needs ensemble_size ≥ 2 to measure a variance, got {ensemble_size}")
        self.embed = self.make_encoder()
        d, a = self.embed_dim, self.actions.dim
        self.models = nn.ModuleList(
            nn.Sequential(nn.Linear(d + a, d), nn.ReLU(), nn.Linear(d, d)) for _ in range(ensemble_size))
        self.make_optimizer([self.models])

    def predictions(self, x, actions):
        """(K, B, D) ensemble predictions of φ(s') from inputs (B, ...) and actions (B, ...)."""
        with torch.no_grad():  # φ is a fixed random embedding
            phi = self.embed(x)
        inp = torch.cat([phi, self.actions.encode(actions)], -1)
        return torch.stack([m(inp) for m in self.models])

    def batch_bonus(self, rollout: Rollout) -> torch.Tensor:
        x = self.rollout_inputs(rollout, next_=False)
        preds = self.predictions(x, rollout.actions.flatten(0, 1))
        return preds.var(0).mean(-1).reshape(rollout.shape)

    def learn(self, rollout: Rollout) -> dict[str, float]:
        x, next_x, actions = self.transitions(rollout)
        with torch.no_grad():
            target = self.embed(next_x)

        def loss_fn(idx):
            err = (self.predictions(x[idx], actions[idx]) - target[idx]).square().mean(-1)  # (K, B)
            mask = torch.rand_like(err) < 0.8  # a bootstrap-style subset per model keeps the ensemble diverse
            loss = (err * mask).sum() / mask.sum().clamp(min=1)
            return loss, {"disagreement_loss": loss.item()}

        return self.fit(loss_fn, len(x))
