import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from mmssl_envs.digit_grid import DIGIT_WORDS, MOVES, TILE, DigitGridEnv


@pytest.mark.parametrize("kwargs", [{}, {"view": "symbolic"}, {"instruction": "none"}, {"size": 7, "num_tiles": 5}])
def test_passes_check_env(kwargs):
    check_env(DigitGridEnv(**kwargs), skip_render_check=True)


def test_registered_id():
    import mmssl_envs.digit_grid  # noqa: F401

    env = gym.make("mmssl/DigitGrid-v0", size=4, num_tiles=2)
    obs, _ = env.reset(seed=0)
    assert obs["image"].shape == (2, 32, 32)


def test_seeded_and_deterministic():
    a, b = DigitGridEnv(), DigitGridEnv()
    oa, _ = a.reset(seed=3)
    ob, _ = b.reset(seed=3)
    assert all(np.array_equal(oa[k], ob[k]) for k in oa)
    for action in [0, 1, 2, 3, 3, 1]:
        ra, rb = a.step(action), b.step(action)
        assert all(np.array_equal(ra[0][k], rb[0][k]) for k in ra[0]) and ra[1:4] == rb[1:4]
        if ra[2] or ra[3]:
            break


def _walk_to(env, cell):
    """Step the agent to ``cell`` (rows first, then columns), returning the last step's result."""
    result = None
    while tuple(env.agent) != cell:
        r, c = env.agent
        action = (0 if cell[0] < r else 1) if cell[0] != r else (2 if cell[1] < c else 3)
        result = env.step(action)
        if result[2] or result[3]:
            break
    return result


def test_reward_on_target_and_zero_on_distractor():
    env = DigitGridEnv(size=5, num_tiles=1, max_steps=50)
    env.reset(seed=0)
    result = _walk_to(env, env.tile_cells[0])
    _, reward, terminated, _, info = result
    assert terminated and info["success"] == 1.0 and 0.1 <= reward <= 1.0
    assert reward == pytest.approx(1 - 0.9 * env.steps / env.max_steps)
    env = DigitGridEnv(size=5, num_tiles=3, max_steps=50)
    env.reset(seed=1)
    wrong = next(cell for cell, d in zip(env.tile_cells, env.tile_digits) if d != env.target)
    # route around other tiles is not guaranteed, so only check when the walk reaches the wrong tile
    _, reward, terminated, _, info = _walk_to(env, wrong)
    if tuple(env.agent) == wrong:
        assert terminated and reward == 0.0 and info["success"] == 0.0


def test_walls_and_truncation():
    env = DigitGridEnv(size=4, num_tiles=1, max_steps=3)
    env.reset(seed=0)
    env.agent = np.array([0, 0])
    env.tile_cells = [(3, 3)]
    env.step(0)  # up into the wall
    assert tuple(env.agent) == (0, 0)
    env.step(2)
    _, _, terminated, truncated, _ = env.step(2)
    assert tuple(env.agent) == (0, 0) and truncated and not terminated
    assert np.array_equal(MOVES[1], [1, 0])


def test_observation_shows_tiles_agent_and_instruction():
    env = DigitGridEnv(size=5, num_tiles=3)
    obs, info = env.reset(seed=2)
    for (r, c), idx in zip(env.tile_cells, env.tile_images):
        assert np.array_equal(obs["image"][0, r * TILE:(r + 1) * TILE, c * TILE:(c + 1) * TILE], env.images[idx])
    r, c = env.agent
    assert obs["image"][1].sum() == 255 * TILE * TILE and obs["image"][1, r * TILE, c * TILE] == 255
    from open_clip.tokenizer import SimpleTokenizer

    text = SimpleTokenizer().decode([t for t in obs["instruction"].tolist() if t not in (0, 49406, 49407)])
    assert text.strip() == f"go to the {DIGIT_WORDS[info['target']]}"
    assert info["target"] in env.tile_digits


def test_test_split_uses_unseen_images():
    train, test = DigitGridEnv(split="train"), DigitGridEnv(split="test")
    seen = {img.tobytes() for img in train.images}
    assert sum(img.tobytes() in seen for img in test.images) < 0.02 * len(test.images)  # only exact duplicates


def test_splits_are_those_of_the_pretraining_run_with_the_same_seed():
    # `mmssl pretrain data=trimodal_digits seed=S` trains on exactly the images and voices of split=train,
    # data_seed=S; split=test holds images and voices that run never saw
    from mmssl.registry import DATASETS

    data = DATASETS.build("trimodal_digits", seed=1)
    train = DigitGridEnv(split="train", data_seed=1, instruction="audio")
    test = DigitGridEnv(split="test", data_seed=1, instruction="audio")
    assert np.array_equal(train.images, data.train.data["image"][:, 0].numpy())
    assert np.array_equal(test.clips, data.test.data["audio"].numpy())
    seen_clips = {c.tobytes() for c in data.train.data["audio"].numpy()}
    assert not any(c.tobytes() in seen_clips for c in test.clips)
    assert not np.array_equal(DigitGridEnv(split="test", data_seed=2).images, test.images)


def test_bad_arguments():
    with pytest.raises(ValueError, match="instruction must be"):
        DigitGridEnv(instruction="smell")
    with pytest.raises(ValueError, match="split must be"):
        DigitGridEnv(split="validation")
    with pytest.raises(ValueError, match="num_tiles"):
        DigitGridEnv(size=2, num_tiles=4)
    with pytest.raises(ValueError, match="not in"):
        env = DigitGridEnv()
        env.reset(seed=0)
        env.step(7)
