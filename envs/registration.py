"""Gymnasium registration of the ``mmssl/...`` ids (the optional ones only when their package is installed)."""

from __future__ import annotations

import importlib.util

import gymnasium as gym

from .factories import (
    make_atari,
    make_minigrid_dict,
    make_minigrid_pixels,
    make_minigrid_symbolic,
    make_mujoco,
)

MINIGRID_IDS = ("mmssl/MiniGridSymbolic-v0", "mmssl/MiniGridPixels-v0", "mmssl/MiniGridDict-v0")


def register() -> None:
    """Register the ``mmssl/...`` ids (idempotent)."""
    entries = {"mmssl/MiniGridSymbolic-v0": make_minigrid_symbolic, "mmssl/MiniGridPixels-v0": make_minigrid_pixels,
               "mmssl/MiniGridDict-v0": make_minigrid_dict}
    if importlib.util.find_spec("ale_py") is not None:
        entries["mmssl/Atari-v0"] = make_atari
    if importlib.util.find_spec("mujoco") is not None:
        entries["mmssl/MuJoCo-v0"] = make_mujoco
    for env_id, entry in entries.items():
        if env_id not in gym.registry:
            gym.register(env_id, entry_point=entry)
