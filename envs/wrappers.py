"""Wrappers shared by the ``mmssl/...`` environments and the vector-env factory."""

from __future__ import annotations

import gymnasium as gym
import numpy as np


class ChannelsFirst(gym.ObservationWrapper):
    """(H, W, C) image observations → (C, H, W), the layout conv encoders read."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        space = env.observation_space
        h, w, c = space.shape
        self.observation_space = gym.spaces.Box(0, 255, (c, h, w), dtype=space.dtype)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.transpose(observation, (2, 0, 1)))


class SuccessInfo(gym.Wrapper):
    """Adds ``info["success"]`` (1.0 / 0.0) on the step an episode ends (terminates or truncates).

    Only there: a key in every step's info costs a vector env a merge per env and step, and success
    is read when an episode ends (``final_info``; evaluation reads a missing key as 0).

    ``rule="positive_terminal"``: an episode succeeds when it terminates (not truncates) with a
    positive reward — MiniGrid's goal reward. ``rule="none"``: never (tasks without a notion of success).
    """

    RULES = ("none", "positive_terminal")

    def __init__(self, env: gym.Env, rule: str = "none"):
        super().__init__(env)
        if rule not in self.RULES:
            from mmssl.errors import ConfigError

            raise ConfigError(f"env success rule must be one of {list(self.RULES)}, got {rule!r}")
        self.rule = rule

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if terminated or truncated:
            info = dict(info)
            info["success"] = float(self.rule == "positive_terminal" and terminated and reward > 0)
        return obs, reward, terminated, truncated, info


class Coverage(gym.Wrapper):
    """Adds ``info["cells_visited"]``, the number of distinct grid cells the agent stood on, when an episode ends.

    For grid worlds with ``unwrapped.agent_pos`` (MiniGrid): how far an episode explored, the measure an
    exploration study needs where success stays at zero. Wrap it inside ``Replayable`` so a restored env
    rebuilds the set by replaying the episode.
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self._cells: set[tuple[int, int]] = set()

    def _visit(self) -> None:
        x, y = self.unwrapped.agent_pos
        self._cells.add((int(x), int(y)))

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._cells = set()
        self._visit()
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._visit()
        if terminated or truncated:
            info = dict(info)
            info["cells_visited"] = float(len(self._cells))
        return obs, reward, terminated, truncated, info


class Replayable(gym.Wrapper):
    """Records how the current episode came about so the env state can be rebuilt exactly.

    ``snapshot()`` returns the env RNG state just before the last ``reset`` (or that reset's seed) and
    the actions taken since; ``restore(snapshot)`` resets with the same randomness and replays the
    actions. Deterministic given its RNG, every gymnasium env is thereby checkpointable without
    pickling it: episode statistics and time limits inside this wrapper replay too. Values are plain
    ints, strings and lists, so checkpoints load with ``weights_only=True``.
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self._seed: int | None = None
        self._rng_state: dict | None = None
        self._options = None
        self._actions: list = []

    def reset(self, *, seed=None, options=None):
        rng = getattr(self.unwrapped, "_np_random", None)
        self._rng_state = None if seed is not None or rng is None else _encode_state(rng.bit_generator.state)
        self._seed, self._options, self._actions = seed, options, []
        return self.env.reset(seed=seed, options=options)

    def step(self, action):
        self._actions.append(np.asarray(action).tolist())
        return self.env.step(action)

    def snapshot(self) -> dict:
        return {"seed": self._seed, "rng_state": self._rng_state, "actions": list(self._actions)}

    def restore(self, snapshot: dict):
        """Rebuild the env state of ``snapshot``; returns the current observation."""
        if snapshot["seed"] is not None:
            obs, _ = self.reset(seed=int(snapshot["seed"]))
        else:
            self.unwrapped.np_random.bit_generator.state = _decode_state(snapshot["rng_state"])
            obs, _ = self.reset()
            self._rng_state = snapshot["rng_state"]
        space = self.action_space
        for action in snapshot["actions"]:
            obs, *_ = self.step(np.asarray(action, dtype=space.dtype) if space.shape else action)
        return obs


def _encode_state(state: dict) -> dict:
    """numpy bit-generator state (with 128-bit ints) → strings, so weights_only loading accepts it."""
    return {k: (_encode_state(v) if isinstance(v, dict) else str(v) if isinstance(v, int) else v)
            for k, v in state.items()}


def _decode_state(state: dict) -> dict:
    return {k: (_decode_state(v) if isinstance(v, dict) else int(v) if isinstance(v, str) and v.isdigit() else v)
            for k, v in state.items()}
