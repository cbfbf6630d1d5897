"""The env factories behind the ``mmssl/...`` ids: MiniGrid (symbolic, pixels, dict with the mission), Atari, MuJoCo."""

from __future__ import annotations

import os
import warnings

import gymnasium as gym
import numpy as np

from .wrappers import ChannelsFirst


def _minigrid(env_id: str, render_mode: str | None, max_steps: int | None):
    import minigrid  # noqa: F401  (registers MiniGrid-* ids)

    from . import minigrid_obs

    kwargs = {"max_steps": max_steps} if max_steps else {}
    env = gym.make(env_id, render_mode=render_mode, **kwargs)
    minigrid_obs.install(env.unwrapped)  # the same observation, computed ~5× faster
    return env


def make_minigrid_symbolic(env_id: str = "MiniGrid-DoorKey-5x5-v0", render_mode: str | None = None,
                           max_steps: int | None = None) -> gym.Env:
    """MiniGrid's egocentric symbolic view (7, 7, 3) uint8 of (object, colour, state) ids."""
    from minigrid.wrappers import ImgObsWrapper

    return ImgObsWrapper(_minigrid(env_id, render_mode, max_steps))


def make_minigrid_pixels(env_id: str = "MiniGrid-DoorKey-5x5-v0", tile_size: int = 8, render_mode: str | None = None,
                         max_steps: int | None = None) -> gym.Env:
    """MiniGrid's egocentric view rendered as RGB, channels-first (3, 7·tile_size, 7·tile_size) uint8."""
    from minigrid.wrappers import ImgObsWrapper, RGBImgPartialObsWrapper

    return ChannelsFirst(ImgObsWrapper(RGBImgPartialObsWrapper(_minigrid(env_id, render_mode, max_steps), tile_size)))


class _MiniGridDict(gym.ObservationWrapper):
    """``image`` and ``direction``; with ``mission_tokens=L`` also the mission string as (L,) int64 open_clip
    BPE ids (each distinct mission tokenised once), the text goal that cross-modal rewards and encoders read."""

    def __init__(self, env: gym.Env, mission_tokens: int = 0):
        super().__init__(env)
        spaces = {k: env.observation_space[k] for k in ("image", "direction")}
        self.mission_tokens, self._ids = mission_tokens, {}
        if mission_tokens:
            spaces["mission"] = gym.spaces.Box(0, 49407, (mission_tokens,), np.int64)
        self.observation_space = gym.spaces.Dict(spaces)

    def observation(self, observation):
        out = {"image": observation["image"], "direction": observation["direction"]}
        if self.mission_tokens:
            mission = observation["mission"]
            if mission not in self._ids:
                from mmssl.data.tokenize import tokenize

                self._ids[mission] = tokenize([mission], self.mission_tokens)[0].numpy().astype(np.int64)
            out["mission"] = self._ids[mission].copy()
        return out


def make_minigrid_dict(env_id: str = "MiniGrid-DoorKey-5x5-v0", render_mode: str | None = None,
                       max_steps: int | None = None, mission_tokens: int = 0) -> gym.Env:
    """MiniGrid's dict observation ``{"image": (7, 7, 3) ids, "direction": Discrete(4)}`` and, with
    ``mission_tokens=L``, ``"mission": (L,)`` token ids of the mission ("use the key to open the door…")."""
    return _MiniGridDict(_minigrid(env_id, render_mode, max_steps), mission_tokens)


def make_atari(game: str = "Pong", render_mode: str | None = None, noop_max: int = 30,
               terminal_on_life_loss: bool = False) -> gym.Env:
    """An ALE game with AtariPreprocessing (Machado et al. 2018 settings, sticky actions off) + 4-frame stack."""
    import ale_py

    gym.register_envs(ale_py)
    env = gym.make(f"ALE/{game}-v5", frameskip=1, repeat_action_probability=0.0, render_mode=render_mode)
    env = gym.wrappers.AtariPreprocessing(env, noop_max=noop_max, frame_skip=4, screen_size=84,
                                          terminal_on_life_loss=terminal_on_life_loss, grayscale_obs=True)
    return gym.wrappers.FrameStackObservation(env, 4)


def make_mujoco(env_id: str = "HalfCheetah-v5", render_mode: str | None = None) -> gym.Env:
    """A MuJoCo task with actions clipped to the action space (the policy's Gaussian is unbounded).

    Rendering without a display needs a headless OpenGL: ``MUJOCO_GL`` if set, else EGL or OSMesa,
    whichever is installed (``headless_gl``). With none, the env is made without rendering and a warning
    says what to install: MuJoCo's default (GLFW) would fail and abort the process at exit.
    """
    if render_mode is not None and "MUJOCO_GL" not in os.environ and not os.environ.get("DISPLAY"):
        backend = headless_gl()
        if backend is None:
            warnings.warn("no headless OpenGL for MuJoCo rendering (apt-get install libegl1 or libosmesa6, or set "
                          "MUJOCO_GL); this env renders nothing", stacklevel=2)
            render_mode = None
        else:
            os.environ["MUJOCO_GL"] = backend  # read when gymnasium's MuJoCo renderer is first imported
    return gym.wrappers.ClipAction(gym.make(env_id, render_mode=render_mode))


def headless_gl() -> str | None:
    """``"egl"`` or ``"osmesa"`` when its library is installed (EGL first: faster), else None."""
    import ctypes.util

    return next((name for name, lib in (("egl", "EGL"), ("osmesa", "OSMesa")) if ctypes.util.find_library(lib)), None)
