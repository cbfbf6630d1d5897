"""Every env in envs/ passes gymnasium's check_env; vector factory, success flag, exact replay, true state."""

import importlib.util

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import mmssl_envs as envs

IDS = [*envs.MINIGRID_IDS]
if importlib.util.find_spec("ale_py") and importlib.util.find_spec("cv2"):
    IDS.append("mmssl/Atari-v0")
if importlib.util.find_spec("mujoco"):
    IDS.append("mmssl/MuJoCo-v0")


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("env_id", IDS)
def test_check_env(env_id, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MuJoCo writes MUJOCO_LOG.TXT into the working directory
    env = gym.make(env_id)
    check_env(env.unwrapped if env_id == "mmssl/MuJoCo-v0" else env, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    env.close()


def test_pixel_and_symbolic_minigrid_shapes():
    assert gym.make("mmssl/MiniGridSymbolic-v0").observation_space.shape == (7, 7, 3)
    assert gym.make("mmssl/MiniGridPixels-v0", tile_size=4).observation_space.shape == (3, 28, 28)
    assert set(gym.make("mmssl/MiniGridDict-v0").observation_space.spaces) == {"image", "direction"}


def test_make_vector_reports_final_obs_and_episode_stats():
    cfg = {"id": "CartPole-v1", "success": "none"}
    vec = envs.make_vector(cfg, 2, seed=0)
    obs, _ = vec.reset(seed=0)
    assert obs.shape == (2, 4)
    for _ in range(300):
        obs, reward, term, trunc, infos = vec.step(np.zeros(2, dtype=np.int64))  # always left: falls fast
        if (term | trunc).any():
            i = int(np.flatnonzero(term | trunc)[0])
            assert infos["final_info"]["episode"]["l"][i] >= 1
            assert infos["final_obs"][i].shape == (4,)
            break
    else:
        pytest.fail("no episode ended")
    vec.close()


def test_success_flag_on_minigrid_goal():
    env = envs.make_env({"id": "mmssl/MiniGridSymbolic-v0", "kwargs": {"env_id": "MiniGrid-Empty-5x5-v0"},
                         "success": "positive_terminal"})
    env.reset(seed=0)
    # Empty-5x5: the agent starts at (1, 1) facing right; the goal is at (3, 3)
    for action in [2, 2, 1, 2, 2]:
        _, reward, terminated, _, info = env.step(action)
    assert terminated and reward > 0 and info["success"] == 1.0


def test_cells_visited_counts_distinct_agent_cells_at_episode_end():
    env = envs.make_env({"id": "mmssl/MiniGridSymbolic-v0",
                         "kwargs": {"env_id": "MiniGrid-Empty-5x5-v0", "max_steps": 6}})
    env.reset(seed=0)
    # Empty-5x5 from (1, 1) facing right: forward, forward (wall ahead: stays), turn, forward, back and forth
    infos = [env.step(action)[-1] for action in [2, 2, 1, 2, 0, 0]]
    assert all("cells_visited" not in info for info in infos[:-1])
    assert infos[-1]["cells_visited"] == 4.0  # (1, 1), (2, 1), (3, 1), (3, 2): the time limit ended the episode
    env.reset()
    *_, info = env.step(2)  # a new episode starts counting afresh
    assert "cells_visited" not in info
    cartpole = envs.make_env({"id": "CartPole-v1"})
    cartpole.reset(seed=0)
    done = False
    while not done:  # always left: falls within a few dozen steps
        _, _, terminated, truncated, info = cartpole.step(0)
        done = terminated or truncated
    assert "cells_visited" not in info  # not a grid world


def test_replay_snapshot_restores_the_exact_state():
    cfg = {"id": "mmssl/MiniGridSymbolic-v0", "kwargs": {"env_id": "MiniGrid-DoorKey-5x5-v0"}}
    a, b = envs.make_vector(cfg, 2, seed=3), envs.make_vector(cfg, 2, seed=3)
    a.reset(seed=3)
    b.reset(seed=99)
    rng = np.random.default_rng(0)
    for _ in range(400):  # crosses episode boundaries (autoreset draws new layouts from the env RNG)
        a.step(rng.integers(0, 7, 2))
    obs_b = envs.restore_vector(b, envs.snapshot_vector(a))
    actions = rng.integers(0, 7, (30, 2))
    for act in actions:
        oa, ra, *_ = a.step(act)
        ob, rb, *_ = b.step(act)
        assert np.array_equal(oa, ob) and np.array_equal(ra, rb)
    assert obs_b.shape == (2, 7, 7, 3)


def test_true_state():
    env = gym.make("CartPole-v1")
    env.reset(seed=0)
    assert envs.true_state(env).shape == (4,)
    grid = gym.make("mmssl/MiniGridSymbolic-v0")
    grid.reset(seed=0)
    state = envs.true_state(grid)
    assert state.shape == (4,) and state[2] ** 2 + state[3] ** 2 == pytest.approx(1.0)
    assert envs.true_state(gym.make("Pendulum-v1")) is None


@pytest.mark.filterwarnings("ignore")
@pytest.mark.skipif(importlib.util.find_spec("mujoco") is None, reason="MuJoCo not installed (pip install -e '.[mujoco]')")
def test_mujoco_true_state_is_what_the_observation_shows(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    env = gym.make("mmssl/MuJoCo-v0", env_id="HalfCheetah-v5")
    obs, _ = env.reset(seed=0)
    np.testing.assert_allclose(envs.true_state(env), obs, rtol=1e-6)  # HalfCheetah observes qpos[1:], qvel


@pytest.mark.filterwarnings("ignore")
def test_minigrid_dict_with_the_tokenised_mission():
    from mmssl.data.tokenize import tokenize

    env = gym.make("mmssl/MiniGridDict-v0", env_id="MiniGrid-GoToDoor-5x5-v0", mission_tokens=16)
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=3)
    mission = env.unwrapped.mission  # e.g. "go to the red door"
    assert obs["mission"].dtype == np.int64 and obs["mission"].shape == (16,)
    assert obs["mission"].tolist() == tokenize([mission], 16)[0].tolist()
    seen = {env.reset(seed=s)[0]["mission"].tobytes() for s in range(20)}
    assert len(seen) > 1  # GoToDoor's mission changes with the episode


@pytest.mark.skipif(importlib.util.find_spec("mujoco") is None, reason="MuJoCo not installed (pip install -e '.[mujoco]')")
def test_mujoco_without_a_headless_renderer_warns_and_renders_nothing(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.setattr(envs.factories, "headless_gl", lambda: None)  # make_mujoco looks it up there
    with pytest.warns(UserWarning, match="libegl1 or libosmesa6"):
        env = envs.make_env({"id": "mmssl/MuJoCo-v0", "kwargs": {"env_id": "HalfCheetah-v5"}}, render_mode="rgb_array")
    env.reset(seed=0)
    assert env.render_mode is None  # run.py then records no video (and does not touch GLFW)
    env.close()
