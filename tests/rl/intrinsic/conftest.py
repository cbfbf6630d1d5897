"""Observation spaces and random rollouts shared by the intrinsic-reward tests."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from mmssl.rl.storage import Rollout

SPACES = {
    "vector": gym.spaces.Box(-1.0, 1.0, (4,), np.float32),
    "pixels": gym.spaces.Box(0, 255, (20, 20, 3), np.uint8),
    "minigrid": gym.spaces.Dict({
        "image": gym.spaces.Box(0, 255, (7, 7, 3), np.uint8),
        "direction": gym.spaces.Discrete(4),
        "mission": gym.spaces.Box(0, 49407, (6,), np.int64),
    }),
}
ACTIONS = gym.spaces.Discrete(3)


def sample(space: gym.Space, prefix: tuple[int, ...], gen: torch.Generator):
    """Random observations of shape (*prefix, *space.shape) as torch tensors (dicts stay dicts)."""
    if isinstance(space, gym.spaces.Dict):
        return {k: sample(s, prefix, gen) for k, s in space.spaces.items()}
    if isinstance(space, gym.spaces.Discrete):
        return torch.randint(space.n, prefix, generator=gen)
    if space.shape == (7, 7, 3):  # MiniGrid (object, colour, state) ids: 11, 6 and 3 values
        u = torch.rand(*prefix, *space.shape, generator=gen)
        return (u * torch.tensor([11, 6, 3])).long()
    if np.issubdtype(space.dtype, np.integer):
        return torch.randint(0, 256 if space.shape != (6,) else 50, (*prefix, *space.shape), generator=gen)
    return torch.randn(*prefix, *space.shape, generator=gen)


def make_rollout(space: gym.Space, T: int = 6, N: int = 2, seed: int = 0, feature_dim: int = 5,
                 done_every: int = 0) -> Rollout:
    gen = torch.Generator().manual_seed(seed)
    obs = sample(space, (T + 1, N), gen)
    cut = (lambda o, s: {k: v[s] for k, v in o.items()}) if isinstance(obs, dict) else (lambda o, s: o[s])
    feats = torch.randn(T + 1, N, feature_dim, generator=gen)
    dones = torch.zeros(T, N)
    if done_every:
        dones[done_every - 1::done_every] = 1
    return Rollout(obs=cut(obs, slice(0, T)), next_obs=cut(obs, slice(1, T + 1)),
                   actions=torch.randint(ACTIONS.n, (T, N), generator=gen), rewards=torch.zeros(T, N),
                   dones=dones, features=feats[:T], next_features=feats[1:])


def step(rollout: Rollout, t: int) -> tuple:
    """(obs, actions, next_obs, dones, next_features) of step t, as ``watch`` receives them."""
    pick = (lambda o: {k: v[t] for k, v in o.items()}) if isinstance(rollout.obs, dict) else (lambda o: o[t])
    return pick(rollout.obs), rollout.actions[t], pick(rollout.next_obs), rollout.dones[t], rollout.next_features[t]


@pytest.fixture(params=sorted(SPACES))
def space_name(request):
    return request.param
