"""mmssl's lean SyncVectorEnv.step returns what gymnasium's SyncVectorEnv returns, in lockstep across episode ends."""

import gymnasium as gym
import numpy as np
import pytest

from mmssl_envs.vector import SyncVectorEnv, make_env


def _pair(env_cfg: dict, n: int = 3):
    fns = [lambda i=i: make_env(env_cfg, 7 + i) for i in range(n)]
    mode = gym.vector.AutoresetMode.SAME_STEP
    return gym.vector.SyncVectorEnv(fns, autoreset_mode=mode), SyncVectorEnv(fns, autoreset_mode=mode)


def _assert_same(a, b):
    if isinstance(a, tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a.keys() - {"t"}:  # RecordEpisodeStatistics' "t": wall-clock seconds, never equal
            _assert_same(a[key], b[key])
    elif isinstance(a, np.ndarray) and a.dtype == object:
        assert a.shape == b.shape
        for x, y in zip(a, b):
            _assert_same(x, y)
    else:
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("env_cfg", [{"id": "CartPole-v1", "max_episode_steps": 30, "success": "none"},
                                     {"id": "Pendulum-v1", "max_episode_steps": 20, "success": "none"}])
def test_lean_step_matches_gymnasium_through_episode_ends(env_cfg):
    reference, lean = _pair(env_cfg)
    _assert_same(reference.reset(seed=3), lean.reset(seed=3))
    reference.action_space.seed(0)
    held, ends = [], 0
    for _ in range(80):
        actions = reference.action_space.sample()
        expected, got = reference.step(actions), lean.step(np.asarray(actions))
        _assert_same(expected, got)
        assert got[0].dtype == reference.single_observation_space.dtype
        ends += int(got[2].sum() + got[3].sum())
        held.append((got[0], got[0].copy()))
    assert ends >= 3, "the steps must cross episode ends (final_obs / final_info)"
    assert all(np.array_equal(kept, copy) for kept, copy in held)  # no returned batch was overwritten later
    reference.close()
    lean.close()
