"""Count bonus: exact counts on a toy grid, SimHash for pixels, bounded table, checkpointable."""

import gymnasium as gym
import numpy as np
import torch

from mmssl.registry import INTRINSIC_REWARDS

from .conftest import ACTIONS, SPACES

GRID = gym.spaces.Box(0, 2, (2,), np.int64)  # (x, y) on a 3×3 grid


def visit(reward, cells):
    """Watch one env walking through ``cells``; the bonus of each arrival."""
    bonus = []
    for cell in cells:
        obs = torch.tensor([cell])
        bonus.append(reward.step_bonus(obs, torch.zeros(1), obs, torch.zeros(1), None).item())
    return bonus


def test_exact_counts_on_a_grid_and_decay_on_revisits():
    reward = INTRINSIC_REWARDS.build("counts", GRID, ACTIONS, 1)
    assert reward.mode == "exact"
    walk = [(0, 0), (0, 1), (0, 0), (1, 1), (0, 0), (0, 1)]
    bonus = visit(reward, walk)
    expected = [1, 1, 2 ** -0.5, 1, 3 ** -0.5, 2 ** -0.5]
    assert np.allclose(bonus, expected)
    assert reward.count(torch.tensor([(0, 0), (0, 1), (1, 1), (2, 2)])) == [3, 2, 1, 0]
    assert reward.memory_size() == 3


def test_minigrid_grids_are_counted_exactly_and_pixels_by_simhash():
    minigrid = INTRINSIC_REWARDS.build("counts", SPACES["minigrid"], ACTIONS, 2)
    pixels = INTRINSIC_REWARDS.build("counts", SPACES["pixels"], ACTIONS, 2, hash_bits=16)
    assert (minigrid.mode, pixels.mode) == ("exact", "simhash")
    frame = torch.randint(0, 256, (1, 20, 20, 3), dtype=torch.uint8)
    other = 255 - frame
    batch = torch.cat([frame, frame, other])
    assert pixels.count(batch) == [0, 0, 0]
    pixels.step_bonus(None, torch.zeros(3), batch, torch.zeros(3), None)
    assert pixels.count(batch) == [2, 2, 1]  # identical frames share a code; the inverted one does not


def test_table_is_bounded_and_evicts_least_recent():
    reward = INTRINSIC_REWARDS.build("counts", GRID, ACTIONS, 1, max_entries=2)
    visit(reward, [(0, 0), (1, 1), (0, 0), (2, 2)])  # (1, 1) is the least recently seen when (2, 2) arrives
    assert reward.memory_size() == 2
    assert reward.count(torch.tensor([(0, 0), (1, 1), (2, 2)])) == [2, 0, 1]


def test_table_survives_a_state_dict_round_trip():
    reward = INTRINSIC_REWARDS.build("counts", GRID, ACTIONS, 1)
    visit(reward, [(0, 0), (2, 2), (0, 0)])
    restored = INTRINSIC_REWARDS.build("counts", GRID, ACTIONS, 1)
    restored.load_state_dict(reward.state_dict())
    assert restored.count(torch.tensor([(0, 0), (2, 2), (1, 0)])) == [2, 1, 0]
