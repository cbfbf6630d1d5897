"""Never Give Up's episodic novelty (with optional RND life-long modulation)."""

from __future__ import annotations

import gymnasium as gym
import torch

from mmssl.errors import ConfigError
from mmssl.registry import INTRINSIC_REWARDS
from mmssl.rl.intrinsic.base import IntrinsicReward, RunningMeanStd, check_positive
from mmssl.rl.intrinsic.rnd import RND
from mmssl.rl.storage import Rollout


@INTRINSIC_REWARDS.register("ngu", modalities=("obs",))
class NGU(IntrinsicReward):
    """NGU (Badia et al. 2020, "Never Give Up: Learning Directed Exploration Strategies"), episodic part.

    Each env keeps a memory M of embeddings φ(s) of this episode (φ trained by inverse dynamics, so it
    keeps what the agent controls). For s' with its k nearest neighbours N_k in M:
    d̃² = max(d²/d̄² − ξ, 0) (d̄²: running mean of k-NN squared distances), K = ε / (d̃² + ε),
    r_episodic = 1 / (√ΣK + c), or 0 when √ΣK + c > s_max. With ``lifelong`` the bonus is multiplied by
    α = clip(1 + (e − μ_e)/σ_e, 1, L), e being an RND error. Memories are reset per env at episode end and
    hold at most ``capacity`` entries each (oldest overwritten). An empty memory is first seeded with the
    episode's first observation φ(s_0) (φ(s_1) when only next-state agent features are given).
    Shapes: obs, next_obs (N, ...), dones (N,) → bonus (N,).
    """

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, num_envs: int,
                 k: int = 10, capacity: int = 1000, kernel_epsilon: float = 1e-3, cluster_distance: float = 8e-3,
                 c: float = 1e-3, max_similarity: float = 8.0, lifelong: bool = True, max_modulation: float = 5.0,
                 **common):
        super().__init__(observation_space, action_space, num_envs, **common)
        if k < 1 or capacity < 1:
            raise ConfigError(f"ngu needs k ≥ 1 and capacity ≥ 1, got k={k}, capacity={capacity}")
        check_positive("ngu", kernel_epsilon=kernel_epsilon, c=c, max_similarity=max_similarity)
        self.k, self.capacity, self.kernel_epsilon, self.cluster_distance = k, capacity, kernel_epsilon, cluster_distance
        self.c, self.max_similarity, self.max_modulation = c, max_similarity, max_modulation
        self.make_inverse_dynamics()
        self.make_optimizer([self.embedding, self.inverse])
        self.rnd = RND(observation_space, action_space, num_envs, coef=1.0, normalise="none",
                       use_agent_features=self.use_agent_features, obs_key=self.obs_key, embed_dim=self.embed_dim,
                       lr=self.lr, update_epochs=self.update_epochs, batch_size=self.batch_size) if lifelong else None
        self.error_stats = RunningMeanStd()
        self.knn_stats = RunningMeanStd()
        self.register_buffer("memory", torch.zeros(num_envs, capacity, self.embed_dim))
        self.register_buffer("fill", torch.zeros(num_envs, dtype=torch.long))
        self.register_buffer("cursor", torch.zeros(num_envs, dtype=torch.long))

    def write(self, embeddings: torch.Tensor, envs: torch.Tensor) -> None:
        """Append (E, D) embeddings to the memories of ``envs`` (E,), overwriting the oldest when full."""
        self.memory[envs, self.cursor[envs]] = embeddings
        self.cursor[envs] = (self.cursor[envs] + 1) % self.capacity
        self.fill[envs] = (self.fill[envs] + 1).clamp(max=self.capacity)

    def reset(self, envs: torch.Tensor) -> None:
        self.fill[envs] = 0
        self.cursor[envs] = 0

    def episodic(self, e: torch.Tensor) -> torch.Tensor:
        """(N, D) queries → (N,) episodic bonus against each env's memory."""
        valid = torch.arange(self.capacity, device=e.device) < self.fill[:, None]
        d2 = (self.memory - e[:, None]).square().sum(-1).masked_fill(~valid, float("inf"))
        knn = d2.topk(min(self.k, self.capacity), largest=False).values  # (N, k); inf where memory is short
        found = knn.isfinite()
        self.knn_stats.update(knn[found])
        scaled = (knn / (self.knn_stats.mean.float() + 1e-8) - self.cluster_distance).clamp(min=0)
        kernel = torch.where(found, self.kernel_epsilon / (scaled + self.kernel_epsilon), 0.0)
        similarity = kernel.sum(-1).sqrt() + self.c
        return torch.where(similarity > self.max_similarity, 0.0, 1 / similarity)

    def step_bonus(self, obs, actions, next_obs, dones, features):
        next_x = self.inputs(next_obs, features)
        e = self.embedding(next_x)
        empty = (self.fill == 0).nonzero().flatten()
        if len(empty):
            first = e if self.use_agent_features else self.embedding(self.inputs(obs, None))
            self.write(first[empty], empty)
        bonus = self.episodic(e)
        self.write(e, torch.arange(self.num_envs, device=e.device))
        self.reset(dones.bool().nonzero().flatten())
        if self.rnd is not None:
            err = self.rnd.error(next_x)
            self.error_stats.update(err)
            alpha = 1 + (err - self.error_stats.mean.float()) / (self.error_stats.std.float() + 1e-8)
            bonus = bonus * alpha.clamp(1, self.max_modulation)
        return bonus

    def learn(self, rollout: Rollout) -> dict[str, float]:
        metrics = self.fit_inverse(rollout, "ngu_inverse_loss")
        return {**metrics, **(self.rnd.learn(rollout) if self.rnd is not None else {})}

    def memory_size(self) -> int:
        return int(self.fill.sum())
