"""Gymnasium environments and wrappers registered under ``mmssl/...`` ids, and the vector-env factory.

Ids (importing ``envs`` registers them):

- ``mmssl/MiniGridSymbolic-v0``: a MiniGrid task (``env_id``) seen as its 7×7×3 symbolic egocentric grid;
- ``mmssl/MiniGridPixels-v0``: the same partial view rendered to (3, 7·tile, 7·tile) uint8 pixels;
- ``mmssl/MiniGridDict-v0``: ``{"image": grid, "direction": Discrete(4)}`` and optionally the tokenised
  mission (``mission_tokens=16``) — a multimodal dict observation;
- ``mmssl/Atari-v0``: an ALE game (``game``) with the standard DQN preprocessing (noop reset, frame skip
  4, 84×84 grey, max-pool) and a 4-frame stack → (4, 84, 84) uint8; registered when ``ale-py`` is installed;
- ``mmssl/MuJoCo-v0``: a MuJoCo task (``env_id``, e.g. ``HalfCheetah-v5``) with clipped actions;
  registered only when ``mujoco`` is installed.

``make_vector(env_cfg, num_envs, seed)`` builds a gymnasium vector env whose sub-envs carry episode
statistics, a success flag, the cells visited (grid worlds) and exact-replay snapshots (see ``envs.wrappers``).
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from collections.abc import Mapping

import gymnasium as gym
import numpy as np

from .wrappers import ChannelsFirst, Coverage, Replayable, SuccessInfo

MINIGRID_IDS = ("mmssl/MiniGridSymbolic-v0", "mmssl/MiniGridPixels-v0", "mmssl/MiniGridDict-v0")


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
                from mmssl.encoders.text import tokenize

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


register()


def imported_module(env_id) -> str | None:
    """The module gymnasium would import for ``module:Env`` (or ``module:Env-v0``) ids, else None."""
    if not isinstance(env_id, str) or ":" not in env_id:
        return None
    return env_id.split(":", 1)[0]


def check_import(env_cfgs: list[Mapping], plugins: list[str] | tuple[str, ...] = ()) -> None:
    """Refuse env ids (``id`` or a wrapper's ``kwargs.env_id``) that import a module not listed in ``plugins``.

    gymnasium's ``gym.make("package.module:Env")`` imports ``package.module``, i.e. runs its code: a config
    (or a sweep spec, or a run folder) must not be able to do that unless the user listed the module
    (top-level ``plugins: [package.module]``) or said ``env.allow_import=true``.
    """
    from mmssl.errors import ConfigError

    for env_cfg in env_cfgs:
        if env_cfg.get("allow_import"):
            continue
        for key, env_id in (("env.id", env_cfg.get("id")), ("env.kwargs.env_id", (env_cfg.get("kwargs") or {}).get("env_id"))):
            module = imported_module(env_id)
            if module is not None and module not in set(plugins or ()):
                raise ConfigError(f"{key}={env_id!r} would import module {module!r}; list it in plugins=[{module}] "
                                  "or pass env.allow_import=true if you trust it")


def make_env(env_cfg: Mapping, seed: int | None = None, render_mode: str | None = None) -> gym.Env:
    """One env from a config node ``{id, kwargs, success, max_episode_steps}`` with the mmssl wrappers."""
    kwargs = dict(env_cfg.get("kwargs") or {})
    if render_mode is not None:
        kwargs["render_mode"] = render_mode
    try:
        env = gym.make(env_cfg["id"], max_episode_steps=env_cfg.get("max_episode_steps"),
                       disable_env_checker=True, **kwargs)  # envs/ are check_env-tested; the checker costs every step
    except gym.error.Error as exc:
        from mmssl.errors import ConfigError

        raise ConfigError(f"cannot make env {env_cfg['id']!r}: {str(exc).splitlines()[0]}") from None
    env = gym.wrappers.RecordEpisodeStatistics(env)
    env = SuccessInfo(env, env_cfg.get("success", "none"))
    if hasattr(env.unwrapped, "agent_pos"):  # grid worlds: distinct cells visited per episode
        env = Coverage(env)
    env = Replayable(env)
    if seed is not None:
        env.action_space.seed(seed)
    return env


def make_vector(env_cfg: Mapping, num_envs: int, seed: int, asynchronous: bool = False) -> gym.vector.VectorEnv:
    """``num_envs`` copies of ``env_cfg`` in a gymnasium vector env, env i seeded with ``seed + i``.

    Autoreset is SAME_STEP: when an episode ends, ``step`` returns the next episode's first observation
    and puts the true final observation and info in ``infos["final_obs"]`` / ``infos["final_info"]``.
    Synchronous envs can be snapshotted and restored exactly (``snapshot_vector`` / ``restore_vector``).
    """
    fns = [lambda i=i: make_env(env_cfg, seed + i) for i in range(num_envs)]
    cls = gym.vector.AsyncVectorEnv if asynchronous else gym.vector.SyncVectorEnv
    return cls(fns, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


def snapshot_vector(envs: gym.vector.VectorEnv) -> list[dict]:
    if not isinstance(envs, gym.vector.SyncVectorEnv):
        from mmssl.errors import ConfigError

        raise ConfigError("exact checkpoints need synchronous envs; set env.asynchronous=false")
    return [env.snapshot() for env in envs.envs]


def restore_vector(envs: gym.vector.SyncVectorEnv, snapshots: list[dict]):
    """Rebuild every sub-env from its snapshot; returns the batched current observation."""
    obs = [env.restore(s) for env, s in zip(envs.envs, snapshots, strict=True)]
    space = envs.single_observation_space
    if isinstance(space, gym.spaces.Dict):
        return {k: np.stack([o[k] for o in obs]) for k in space.spaces}
    return np.stack(obs)


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


from . import digit_grid  # noqa: E402,F401  (registers mmssl/DigitGrid-v0, the flagship task)
