"""What one PPO rollout hands to auxiliary objectives and intrinsic rewards."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

Obs = torch.Tensor | dict[str, torch.Tensor]


@dataclass
class Rollout:
    """T steps of N parallel environments.

    obs / next_obs: (T, N, *obs_shape) or a dict of those (dict observations). ``next_obs[t]`` is the true
    observation after ``actions[t]`` — the final observation of the episode when ``dones[t]`` is set,
    not the first of the next one. actions: (T, N, *action_shape); rewards, dones: (T, N) float;
    features / next_features: (T, N, D) detached agent-encoder features of obs / next_obs, when computed.
    """

    obs: Obs
    next_obs: Obs
    actions: torch.Tensor
    rewards: torch.Tensor
    dones: torch.Tensor
    features: torch.Tensor | None = None
    next_features: torch.Tensor | None = None
    extra: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.rewards.shape)  # type: ignore[return-value]


def flatten_obs(obs: Obs) -> Obs:
    """(T, N, ...) → (T·N, ...) for a tensor or every entry of a dict."""
    if isinstance(obs, dict):
        return {k: v.flatten(0, 1) for k, v in obs.items()}
    return obs.flatten(0, 1)
