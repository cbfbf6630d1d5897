"""Episodic bonuses (E3B, NGU): shrink on repeats, reset at episode ends, bounded memories."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from mmssl.registry import INTRINSIC_REWARDS

from .conftest import ACTIONS

SPACE = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)


def run(reward, states, dones):
    """Feed (T, N, 4) next states with (T, N) dones; (T, N) bonuses."""
    return torch.stack([reward.step_bonus(s, torch.zeros(len(s)), s, d, None) for s, d in zip(states, dones)])


def test_e3b_bonus_shrinks_as_b_over_one_plus_b_on_a_repeated_state():
    reward = INTRINSIC_REWARDS.build("e3b", SPACE, ACTIONS, 1, embed_dim=8)
    state = torch.randn(1, 4).expand(5, 1, 4)
    bonus = run(reward, state, torch.zeros(5, 1))[:, 0]
    assert (bonus[1:] < bonus[:-1]).all()
    torch.testing.assert_close(bonus[1:], bonus[:-1] / (1 + bonus[:-1]), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["e3b", "ngu"])
def test_episodic_memory_resets_per_env_at_episode_end(name):
    reward = INTRINSIC_REWARDS.build(name, SPACE, ACTIONS, 2, embed_dim=8, **({"lifelong": False} if name == "ngu" else {}))
    state = torch.randn(1, 1, 4).expand(6, 2, 4)
    dones = torch.zeros(6, 2)
    dones[2, 0] = 1  # env 0's episode ends at step 2; env 1 keeps going
    bonus = run(reward, state, dones)
    assert bonus[3, 1] < bonus[3, 0]  # env 1 has seen the state 4 times, env 0 just started over
    torch.testing.assert_close(bonus[3, 0], bonus[0, 0])
    torch.testing.assert_close(bonus[3:, 0], bonus[:3, 0])


def test_ngu_prefers_novel_states_within_an_episode():
    reward = INTRINSIC_REWARDS.build("ngu", SPACE, ACTIONS, 2, embed_dim=8, lifelong=False, k=3)
    gen = torch.Generator().manual_seed(1)
    repeat = torch.randn(1, 4, generator=gen).expand(12, 4)
    novel = torch.randn(12, 4, generator=gen) * 2
    bonus = run(reward, torch.stack([repeat, novel], 1), torch.zeros(12, 2))
    assert bonus[4:, 0].max() < bonus[4:, 1].min()


def test_ngu_memory_is_bounded_and_counted():
    reward = INTRINSIC_REWARDS.build("ngu", SPACE, ACTIONS, 2, embed_dim=8, capacity=5)
    run(reward, torch.randn(20, 2, 4), torch.zeros(20, 2))
    assert reward.memory_size() == 2 * 5
    run(reward, torch.randn(1, 2, 4), torch.tensor([[1.0, 0.0]]))
    assert reward.memory_size() == 5


def test_e3b_memory_is_a_fixed_size_covariance():
    reward = INTRINSIC_REWARDS.build("e3b", SPACE, ACTIONS, 3, embed_dim=8)
    run(reward, torch.randn(30, 3, 4), torch.zeros(30, 3))
    assert reward.memory_size() == 3 * 8 * 8
