"""The fast MiniGrid observation equals MiniGrid's own, step for step, on random episodes of several tasks."""

import gymnasium as gym
import minigrid  # noqa: F401  (registers MiniGrid-* ids)
import numpy as np
import pytest

import mmssl_envs as envs
from mmssl_envs import minigrid_obs


@pytest.mark.parametrize("env_id,kwargs", [
    ("MiniGrid-DoorKey-8x8-v0", {}), ("MiniGrid-MultiRoom-N4-S5-v0", {}), ("MiniGrid-KeyCorridorS3R3-v0", {}),
    ("MiniGrid-LavaCrossingS9N1-v0", {}), ("MiniGrid-Empty-5x5-v0", {}), ("MiniGrid-ObstructedMaze-1Dlhb-v0", {}),
    ("MiniGrid-DoorKey-6x6-v0", {"see_through_walls": True, "agent_view_size": 5})])
def test_fast_observation_equals_minigrid(env_id, kwargs):
    ref, fast = gym.make(env_id, **kwargs).unwrapped, gym.make(env_id, **kwargs).unwrapped
    assert minigrid_obs.install(fast)
    rng = np.random.default_rng(0)
    steps = carried = 0
    episode = 0
    while steps < 1500:  # whole episodes (≤ 300 steps each) from seeds 0, 1, …
        a, _ = ref.reset(seed=episode)
        b, _ = fast.reset(seed=episode)
        done, episode, start = False, episode + 1, steps
        while not done and steps - start < 300:
            np.testing.assert_array_equal(a["image"], b["image"])
            assert a["direction"] == b["direction"] and a["mission"] == b["mission"]
            action = int(rng.integers(ref.action_space.n))
            a, _, term_a, trunc_a, _ = ref.step(action)
            b, _, term_b, trunc_b, _ = fast.step(action)
            assert (term_a, trunc_a) == (term_b, trunc_b)
            done, steps, carried = term_a or trunc_a, steps + 1, carried + (ref.carrying is not None)
    assert a["image"].dtype == b["image"].dtype == np.uint8
    if "Key" in env_id:
        assert carried > 0  # the carried object is drawn at the agent's cell: that path ran


def test_the_mmssl_minigrid_envs_use_it_and_keep_their_spaces():
    for env_id in envs.MINIGRID_IDS:
        env = gym.make(env_id)
        assert env.unwrapped.gen_obs.__func__ is minigrid_obs.gen_obs
        obs, _ = env.reset(seed=0)
        assert env.observation_space.contains(obs)


def test_not_installed_over_a_custom_observation():
    from minigrid.envs import EmptyEnv

    class Custom(EmptyEnv):
        def gen_obs(self):
            return super().gen_obs()

    assert not minigrid_obs.install(Custom())
