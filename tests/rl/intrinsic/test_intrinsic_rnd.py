"""RND: the bonus falls on states it is trained on and stays high on novel ones."""

import gymnasium as gym
import numpy as np
import torch

from mmssl.registry import INTRINSIC_REWARDS
from mmssl.rl.storage import Rollout

from .conftest import ACTIONS

SPACE = gym.spaces.Box(-1.0, 1.0, (8,), np.float32)


def rollout_of(states):
    """A (T, 1) rollout whose next observations are ``states`` (T, 8)."""
    T = len(states)
    obs = states[:, None]
    return Rollout(obs=obs, next_obs=obs, actions=torch.zeros(T, 1, dtype=torch.long),
                   rewards=torch.zeros(T, 1), dones=torch.zeros(T, 1))


def test_bonus_falls_on_repeated_states_and_stays_high_on_novel_ones():
    reward = INTRINSIC_REWARDS.build("rnd", SPACE, ACTIONS, 1, normalise="none", coef=1.0, lr=3e-3,
                                     embed_dim=32, batch_size=16, update_epochs=4)
    familiar = rollout_of(torch.randn(16, 8))
    novel = rollout_of(torch.randn(16, 8) * 3 + 2)
    before = reward.compute(familiar).mean()
    for _ in range(15):
        reward.compute(familiar)
        metrics = reward.update(familiar)
    after = reward.compute(familiar).mean()
    assert after < 0.2 * before, (before, after)
    assert reward.compute(novel).mean() > 5 * after
    assert metrics["rnd_loss"] < 0.2 * before
