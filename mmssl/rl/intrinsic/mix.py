"""Several intrinsic rewards at once, summed with weights."""

from __future__ import annotations

from collections.abc import Mapping

import gymnasium as gym
import torch
from torch import nn

from mmssl.errors import ConfigError
from mmssl.registry import INTRINSIC_REWARDS
from mmssl.rl.intrinsic.base import IntrinsicReward
from mmssl.rl.storage import Rollout


@INTRINSIC_REWARDS.register("mix", modalities=("obs",))
class MixedIntrinsicReward(IntrinsicReward):
    """b_t = coef · Σ_i w_i · b_t^i, each b^i already normalised and scaled by its own ``coef``.

    ``rewards``: ``{slot: {name: <registered reward>, weight: w, **options}}``; ``name`` defaults to the
    slot, so ``{rnd: {weight: 1.0}, counts: {weight: 0.5, coef: 0.1}}`` works. Every lifecycle call goes to
    each part; metrics are prefixed with the slot (``rnd/bonus_mean``, ``counts/coef``, …).
    """

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, num_envs: int,
                 rewards: dict | None = None, coef: float = 1.0, normalise: str = "none", **common):
        super().__init__(observation_space, action_space, num_envs, coef=coef, normalise=normalise, **common)
        if not rewards:
            raise ConfigError("intrinsic reward 'mix' needs rewards: {slot: {name: ..., weight: ...}, ...}")
        parts, self.weights = {}, {}
        for slot, options in rewards.items():
            if not isinstance(options, Mapping):
                raise ConfigError(f"mix.rewards.{slot} must be a mapping of options, got {options!r}")
            options = dict(options)
            name, self.weights[slot] = options.pop("name", slot), float(options.pop("weight", 1.0))
            if name == "mix":
                raise ConfigError("mix cannot contain another 'mix'; list its parts directly")
            parts[slot] = INTRINSIC_REWARDS.build(name, observation_space, action_space, num_envs, **options)
        self.parts = nn.ModuleDict(parts)

    def watch(self, obs, actions, next_obs, dones, features=None) -> None:
        for part in self.parts.values():
            part.watch(obs, actions, next_obs, dones, features)

    def batch_bonus(self, rollout: Rollout) -> torch.Tensor:
        total = torch.zeros(rollout.shape, device=rollout.rewards.device)
        self._part_means = {}
        for slot, part in self.parts.items():
            bonus = part.compute(rollout)
            self._part_means[f"{slot}/bonus_mean"] = bonus.mean().item()
            total = total + self.weights[slot] * bonus
        return total

    @torch.no_grad()
    def compute(self, rollout: Rollout) -> torch.Tensor:
        total = super().compute(rollout)
        self._last.update(self._part_means)
        return total

    def learn(self, rollout: Rollout) -> dict[str, float]:
        return {f"{slot}/{k}": v for slot, part in self.parts.items() for k, v in part.update(rollout).items()}

    def memory_size(self) -> int:
        return sum(part.memory_size() for part in self.parts.values())
