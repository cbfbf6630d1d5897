"""Envs from config nodes: the import guard on env ids, one wrapped env, the vector env and its exact snapshots."""

from __future__ import annotations

from collections.abc import Mapping

import gymnasium as gym
import numpy as np

from .wrappers import Coverage, Replayable, SuccessInfo


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


class SyncVectorEnv(gym.vector.SyncVectorEnv):
    """gymnasium's ``SyncVectorEnv`` with a leaner ``step`` for SAME_STEP autoreset and array observations.

    The same results, key for key (``tests/envs/test_vector.py`` steps both in lockstep): the batch is
    stacked into a new array instead of written into a buffer and deep-copied, actions are indexed instead of
    iterated through the space, and empty per-env infos are not merged. For CartPole's 8 µs env steps the
    vector's own work was 18 µs of a 51 µs step of 4 envs; other modes and observation spaces take
    gymnasium's ``step``.
    """

    def step(self, actions):
        if (self.autoreset_mode != gym.vector.AutoresetMode.SAME_STEP or not isinstance(actions, np.ndarray)
                or not isinstance(self.single_observation_space, gym.spaces.Box)):
            return super().step(actions)
        infos: dict = {}
        for i, env in enumerate(self.envs):
            obs, self._rewards[i], self._terminations[i], self._truncations[i], info = env.step(actions[i])
            if self._terminations[i] or self._truncations[i]:
                infos = self._add_info(infos, {"final_obs": obs, "final_info": info}, i)
                obs, info = env.reset()
            self._env_obs[i] = obs
            if info:
                infos = self._add_info(infos, info, i)
        # a new array each step (nothing the caller holds is overwritten later), in the space's dtype as before
        self._observations = np.stack(self._env_obs, out=np.empty_like(self._observations))
        self._autoreset_envs = np.logical_or(self._terminations, self._truncations)
        return (self._observations, np.copy(self._rewards), np.copy(self._terminations), np.copy(self._truncations),
                infos)


def make_vector(env_cfg: Mapping, num_envs: int, seed: int, asynchronous: bool = False) -> gym.vector.VectorEnv:
    """``num_envs`` copies of ``env_cfg`` in a gymnasium vector env, env i seeded with ``seed + i``.

    Autoreset is SAME_STEP: when an episode ends, ``step`` returns the next episode's first observation
    and puts the true final observation and info in ``infos["final_obs"]`` / ``infos["final_info"]``.
    Synchronous envs can be snapshotted and restored exactly (``snapshot_vector`` / ``restore_vector``).
    """
    fns = [lambda i=i: make_env(env_cfg, seed + i) for i in range(num_envs)]
    cls = gym.vector.AsyncVectorEnv if asynchronous else SyncVectorEnv
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
