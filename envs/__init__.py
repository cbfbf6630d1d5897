"""Gymnasium environments and wrappers registered under ``mmssl/...`` ids, and the vector-env factory.

Ids (importing ``mmssl_envs`` registers them):

- ``mmssl/MiniGridSymbolic-v0``: a MiniGrid task (``env_id``) seen as its 7×7×3 symbolic egocentric grid;
- ``mmssl/MiniGridPixels-v0``: the same partial view rendered to (3, 7·tile, 7·tile) uint8 pixels;
- ``mmssl/MiniGridDict-v0``: ``{"image": grid, "direction": Discrete(4)}`` and optionally the tokenised
  mission (``mission_tokens=16``) — a multimodal dict observation;
- ``mmssl/Atari-v0``: an ALE game (``game``) with the standard DQN preprocessing (noop reset, frame skip
  4, 84×84 grey, max-pool) and a 4-frame stack → (4, 84, 84) uint8; registered when ``ale-py`` is installed;
- ``mmssl/MuJoCo-v0``: a MuJoCo task (``env_id``, e.g. ``HalfCheetah-v5``) with clipped actions;
  registered only when ``mujoco`` is installed.

``make_vector(env_cfg, num_envs, seed)`` builds a gymnasium vector env whose sub-envs carry episode
statistics, a success flag, the cells visited (grid worlds) and exact-replay snapshots (see ``mmssl_envs.wrappers``).

Modules: ``factories`` (the env constructors), ``registration`` (the gymnasium ids), ``vector`` (envs from
config nodes, vector envs, snapshots), ``probes`` (probe targets), ``wrappers``, ``minigrid_obs`` (the fast
MiniGrid observation), ``digit_grid`` (the flagship task).
"""

from __future__ import annotations

from .factories import headless_gl
from .probes import true_state
from .registration import MINIGRID_IDS, register
from .vector import check_import, imported_module, make_env, make_vector, restore_vector, snapshot_vector

__all__ = ["MINIGRID_IDS", "check_import", "headless_gl", "imported_module", "make_env", "make_vector", "register",
           "restore_vector", "snapshot_vector", "true_state"]

register()

from . import digit_grid  # noqa: E402,F401  (registers mmssl/DigitGrid-v0, the flagship task)
