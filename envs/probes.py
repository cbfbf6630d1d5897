"""Probe targets: the simulator state a representation probe regresses on."""

from __future__ import annotations

import gymnasium as gym
import numpy as np


def true_state(env: gym.Env) -> np.ndarray | None:
    """The simulator state a representation probe regresses on, where known.

    CartPole: (x, ẋ, θ, θ̇); MiniGrid: (agent x, agent y, cos, sin of the facing direction); MuJoCo:
    joint positions without the first (the root's x, which the observations leave out too) and velocities.
    Else None.
    """
    u = env.unwrapped
    if type(u).__name__ == "CartPoleEnv":
        return np.asarray(u.state, dtype=np.float64)
    data = getattr(u, "data", None)
    if data is not None and hasattr(data, "qpos") and hasattr(data, "qvel"):
        return np.concatenate([data.qpos[1:], data.qvel]).astype(np.float64)
    if hasattr(u, "agent_pos") and hasattr(u, "agent_dir") and u.agent_pos is not None:
        angle = u.agent_dir * np.pi / 2
        return np.array([u.agent_pos[0], u.agent_pos[1], np.cos(angle), np.sin(angle)], dtype=np.float64)
    return None
