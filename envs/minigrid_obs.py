"""MiniGrid's egocentric observation, computed without building intermediate grids.

MiniGrid's ``gen_obs`` slices a ``Grid`` of the agent's view, rotates it ``agent_dir + 1`` times (each a
new ``Grid`` filled cell by cell), propagates visibility, blanks hidden cells and encodes the rest: about
half of a PPO step on DoorKey (cProfile). ``gen_obs`` below reads the view's cells once into (id, colour,
state) codes and an opacity mask, rotates them with numpy and runs the same visibility sweep on plain
lists. The result equals MiniGrid's, array for array (tests/envs/test_minigrid_obs.py checks that in
lockstep over random episodes of several tasks); ``install`` swaps it in on one env instance, and only
when the env uses MiniGrid's own ``gen_obs`` and ``gen_obs_grid``.
"""

from __future__ import annotations

import functools

import numpy as np

_EMPTY = (1, 0, 0)  # OBJECT_TO_IDX["empty"]; what a visible cell without an object encodes to
_WALL = (2, 5, 0)  # a grey wall: what MiniGrid puts outside the grid


def install(env) -> bool:
    """Use the fast observation on MiniGrid env ``env`` (the unwrapped instance); False when it is not safe."""
    from minigrid.minigrid_env import MiniGridEnv

    cls = type(env)
    if not isinstance(env, MiniGridEnv) or cls.gen_obs is not MiniGridEnv.gen_obs \
            or cls.gen_obs_grid is not MiniGridEnv.gen_obs_grid:
        return False
    env.gen_obs = gen_obs.__get__(env)
    return True


def gen_obs(env) -> dict:
    """``{"image": (view, view, 3) uint8, "direction", "mission"}`` exactly as ``MiniGridEnv.gen_obs``."""
    size = env.agent_view_size
    top_x, top_y, _, _ = env.get_view_exts(size)
    width, height, cells = env.grid.width, env.grid.height, env.grid.grid
    codes, opaque = [], []  # the view's cells, column i major: MiniGrid's (i, j) layout, flattened
    for x in range(top_x, top_x + size):
        for y in range(top_y, top_y + size):
            if 0 <= x < width and 0 <= y < height:
                obj = cells[y * width + x]
                if obj is None:
                    codes.append(_EMPTY)
                    opaque.append(False)
                else:
                    codes.append(obj.encode())
                    opaque.append(not obj.see_behind())
            else:
                codes.append(_WALL)
                opaque.append(True)
    order = _turned(size, (env.agent_dir + 1) % 4)  # MiniGrid rotates the view agent_dir + 1 times
    image = np.array(codes, np.uint8)[order].reshape(size, size, 3)
    agent = (size // 2, size - 1)
    if not env.see_through_walls:
        visible = _visibility(np.array(opaque)[order].reshape(size, size).tolist(), agent, size)
        image[~visible] = 0
    image[agent] = env.carrying.encode() if env.carrying else _EMPTY
    return {"image": image, "direction": env.agent_dir, "mission": env.mission}


@functools.cache
def _turned(size: int, turns: int) -> np.ndarray:
    """Flat source index of every cell of the view after ``turns`` of ``Grid.rotate_left``, which maps
    cell (i, j) to (j, size-1-i): np.rot90 with k=-1 in this layout."""
    return np.rot90(np.arange(size * size).reshape(size, size), -turns).ravel()


def _visibility(opaque: list[list[bool]], agent: tuple[int, int], size: int) -> np.ndarray:
    """``Grid.process_vis``: light spreads from the agent row by row away from it, stopped by opaque cells."""
    mask = [[False] * size for _ in range(size)]
    mask[agent[0]][agent[1]] = True
    for j in reversed(range(size)):
        for i in range(size - 1):
            if mask[i][j] and not opaque[i][j]:
                mask[i + 1][j] = True
                if j > 0:
                    mask[i + 1][j - 1] = mask[i][j - 1] = True
        for i in reversed(range(1, size)):
            if mask[i][j] and not opaque[i][j]:
                mask[i - 1][j] = True
                if j > 0:
                    mask[i - 1][j - 1] = mask[i][j - 1] = True
    return np.array(mask, dtype=bool)
