"""The IntrinsicReward contract and the machinery every bonus shares.

Lifecycle (RLeXplore-style), called by the PPO loop:

- ``watch(obs, actions, next_obs, dones, features=None)`` once per env step, tensors (N, ...): episodic
  memories and counts see transitions in order (``features``: (N, D) agent features of ``next_obs``);
- ``compute(rollout) -> (T, N) float32`` once per rollout: the bonus for ``next_obs[t]``, already
  normalised and multiplied by the current coefficient;
- ``update(rollout) -> dict[str, float]``: train the reward's own networks, decay the coefficient and
  return metrics to log.

Rewards that judge one transition at a time (counts, NGU, E3B) implement ``step_bonus``; ``compute``
then uses what ``watch`` recorded for the rollout, or replays the rollout through ``step_bonus`` when the
loop never called ``watch`` (so both integrations give the same numbers). Rewards that judge a whole batch
(RND, ICM, RE3, …) implement ``batch_bonus``.

Inputs: with ``use_agent_features`` the reward reads the agent's detached features from the rollout;
otherwise it encodes observations with its own encoder, chosen from the observation space (MLP for
vectors, a small CNN for pixels / MiniGrid grids). Dict observations are read at ``obs_key`` (default
``"image"`` when present).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmssl.encoders.obs import encoder_for_space
from mmssl.errors import ConfigError, ShapeError
from mmssl.rl.actions import ActionCodec, InverseDynamicsHead
from mmssl.rl.normalize import RunningMeanStd  # noqa: F401  (re-exported for the rewards)
from mmssl.rl.storage import Obs, Rollout, flatten_obs
from mmssl.types import EncoderOutput

NORMALISE = ("none", "rms", "std", "return")


def select_obs(obs: Obs, key: str | None) -> torch.Tensor:
    """The tensor the reward reads: ``obs`` itself, or ``obs[key]`` for dict observations."""
    if not isinstance(obs, dict):
        return obs
    if key not in obs:
        raise ConfigError(f"observation key {key!r} not in the observation dict {sorted(obs)}; set obs_key")
    return obs[key]


def pick_space(space: gym.Space, key: str | None) -> tuple[gym.Space, str | None]:
    """The sub-space at ``key`` of a Dict space (default: ``image``, else the first Box), and that key."""
    if not isinstance(space, gym.spaces.Dict):
        return space, None
    if key is None:
        boxes = [k for k, s in space.spaces.items() if isinstance(s, gym.spaces.Box)]
        key = "image" if "image" in space.spaces else (boxes[0] if boxes else None)
    if key not in space.spaces:
        raise ConfigError(f"obs_key {key!r} is not in the observation space's keys {sorted(space.spaces)}")
    return space.spaces[key], key


def is_channels_last(shape: tuple[int, ...]) -> bool:
    """(H, W, C) — gymnasium's convention for pixels and MiniGrid grids — unless the shape only reads as
    (C, H, W) (a small first and a large last dimension, e.g. stacked frames (4, 84, 84))."""
    return len(shape) == 3 and not (shape[0] <= 4 < shape[-1])


class Preprocess(nn.Module):
    """Raw observations (B, *space.shape) → float tensors an encoder reads.

    Images become (B, C, H, W) (channel-last input is permuted), uint8 is scaled to [0, 1]; Discrete
    observations become one-hot vectors; vectors are flattened to (B, D).
    """

    kind: str
    shape: tuple[int, ...]  # what forward returns per item: (D,) or (C, H, W)
    channels_last: bool

    def __init__(self, space: gym.Space) -> None:
        super().__init__()
        if isinstance(space, gym.spaces.Discrete):
            self.kind, self.shape = "discrete", (int(space.n),)
        elif isinstance(space, gym.spaces.Box) and len(space.shape) == 3:
            c_last = is_channels_last(space.shape)
            h, w, c = space.shape if c_last else (space.shape[1], space.shape[2], space.shape[0])
            self.kind, self.shape, self.channels_last = "image", (c, h, w), c_last
        elif isinstance(space, gym.spaces.Box):
            self.kind, self.shape = "vector", (int(np.prod(space.shape)),)
        else:
            raise ConfigError(f"intrinsic rewards read Box or Discrete observations, not {space}; "
                              "set obs_key to a Box entry of a Dict space or use_agent_features=true")
        self.scale = 1 / 255 if isinstance(space, gym.spaces.Box) and space.dtype == np.uint8 else 1.0

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if self.kind == "discrete":
            return F.one_hot(obs.long().reshape(-1), self.shape[0]).float()
        x = obs.float() * self.scale
        if self.kind == "image":
            x = x.permute(0, 3, 1, 2) if self.channels_last else x
            if tuple(x.shape[1:]) != self.shape:
                raise ShapeError(f"expected image observations {self.shape} (C, H, W), got {tuple(obs.shape[1:])}")
            return x
        return x.reshape(len(x), -1)


def is_symbolic_grid(space: gym.Space) -> bool:
    """MiniGrid-style symbolic grids: (H, W, 3) integer (object, colour, state) ids on a small square grid."""
    shape: tuple[int, ...] = getattr(space, "shape", None) or ()
    return (isinstance(space, gym.spaces.Box) and np.issubdtype(space.dtype, np.integer) and len(shape) == 3
            and shape[2] == 3 and shape[0] == shape[1] <= 15)


def default_encoder_spec(shape: tuple[int, ...], grid: bool) -> dict[str, Any]:
    """The obs encoder (``ENCODERS`` name) for an input: ``minigrid`` for symbolic grids, ``mlp`` for
    vectors, ``nature_cnn`` for images of at least 36 pixels a side and ``impala_cnn`` for smaller ones."""
    if grid:
        return {"name": "minigrid"}
    if len(shape) == 1:
        return {"name": "mlp"}
    return {"name": "nature_cnn" if min(shape[1:]) >= 36 else "impala_cnn"}


class Pooled(nn.Module):
    """An ``Encoder`` seen as a plain module: input → ``pooled`` (B, dim)."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: EncoderOutput = self.encoder(x)
        return out.pooled


class IntrinsicReward(nn.Module):
    """Base class of every exploration bonus; see the module docstring for the lifecycle.

    Common options (every registered reward accepts them): ``coef`` (β, the bonus scale),
    ``coef_decay`` (β ← β·decay after each ``update``), ``normalise`` (``none``; ``rms``, the default:
    divide by the running root-mean-square √(μ² + σ²) of the bonus, so the normalised bonus is O(1) even
    when it barely varies around a large mean; ``std``: divide by the running std alone, which blows such
    a bonus up; ``return``: RND's forward filter, divide by the running std of the
    discounted intrinsic return ``R_t = γ R_{t-1} + r_t``), ``gamma`` (that filter's discount),
    ``use_agent_features``, ``obs_key``, ``encoder`` (an ``ENCODERS`` spec ``{name, **options}`` for the
    reward's own networks; default from the space, see ``default_encoder_spec``), ``embed_dim``, ``lr``,
    ``update_epochs``, ``batch_size``. A reward takes its own options and forwards ``**common`` here;
    one whose default differs declares that option itself (RND: ``normalise="return"``), and the
    registry reads both signatures together (``mmssl.registry.parameters``).
    """

    coef: torch.Tensor  # buffers (registered in __init__), declared for type checkers
    intrinsic_return: torch.Tensor
    #: the embedding φ and inverse-dynamics head of rewards that train them with ``fit_inverse`` (ICM, E3B, NGU)
    embedding: nn.Module
    inverse: InverseDynamicsHead

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, num_envs: int, *,
                 coef: float = 0.01, coef_decay: float = 1.0, normalise: str = "rms", gamma: float = 0.99,
                 use_agent_features: bool = False, obs_key: str | None = None, encoder: dict | None = None,
                 embed_dim: int = 64, lr: float = 1e-3, update_epochs: int = 1, batch_size: int = 256) -> None:
        super().__init__()
        if normalise not in NORMALISE:
            raise ConfigError(f"normalise must be one of {list(NORMALISE)}, got {normalise!r}")
        if num_envs < 1 or coef < 0 or not 0 < coef_decay <= 1:
            raise ConfigError(f"need num_envs ≥ 1, coef ≥ 0 and 0 < coef_decay ≤ 1; got {num_envs}, {coef}, {coef_decay}")
        self.observation_space, self.action_space, self.num_envs = observation_space, action_space, num_envs
        self.use_agent_features, self.normalise_mode, self.gamma = use_agent_features, normalise, gamma
        self.embed_dim, self.lr, self.update_epochs, self.batch_size = embed_dim, lr, update_epochs, batch_size
        self.space, self.obs_key = pick_space(observation_space, obs_key)
        self.preprocess = None if use_agent_features else Preprocess(self.space)
        # symbolic grids stay integer ids (the minigrid encoder embeds them); everything else is preprocessed
        self.grid = not use_agent_features and is_symbolic_grid(self.space)
        if self.preprocess is not None:  # not use_agent_features: the reward's own networks read observations
            shape = tuple(self.space.shape or ()) if self.grid else self.preprocess.shape
            self.encoder_spec = dict(encoder or default_encoder_spec(shape, self.grid))
            # the space the encoder reads, for encoder_for_space's dry run (valid grid ids: 0..2)
            self.input_space = (gym.spaces.Box(0, 2, shape, np.int64) if self.grid
                                else gym.spaces.Box(-1.0, 1.0, shape, np.float32))
        self.actions = ActionCodec(action_space, f"intrinsic reward {self.name!r}")
        self.register_buffer("coef", torch.tensor(float(coef), dtype=torch.float64))
        self.coef_decay = coef_decay
        self.bonus_stats = RunningMeanStd()
        self.return_stats = RunningMeanStd()
        self.register_buffer("intrinsic_return", torch.zeros(num_envs, dtype=torch.float64))
        self._watched: list[torch.Tensor] = []
        self._last: dict[str, float] = {}
        self.optimizer: torch.optim.Optimizer | None = None

    # -- building blocks for subclasses ---------------------------------------------------------
    def make_encoder(self, dim: int | None = None) -> nn.Module:
        """A fresh network from this reward's input (observations or agent features) to (B, dim)."""
        dim = dim or self.embed_dim
        if self.use_agent_features:  # the agent's feature size is only known when features arrive
            return nn.Sequential(nn.LazyLinear(self.embed_dim), nn.ReLU(), nn.Linear(self.embed_dim, dim))
        spec = {"dim": self.embed_dim, **self.encoder_spec}
        body = encoder_for_space(self.input_space, spec)
        return nn.Sequential(Pooled(body), nn.Linear(body.dim, dim))

    def inputs(self, obs: Obs | None, features: torch.Tensor | None) -> torch.Tensor:
        """(B, ...) network input: agent features, or the preprocessed observation at ``obs_key``."""
        if self.preprocess is None:  # use_agent_features
            if features is None:
                raise ConfigError(f"{self.name} has use_agent_features=true but the rollout carries no features; "
                                  "have the agent store them or set use_agent_features=false")
            return features.float()
        if obs is None:
            raise ConfigError(f"{self.name} reads observations (use_agent_features=false) but was given obs=None")
        x = select_obs(obs, self.obs_key)
        return x.long() if self.grid else self.preprocess(x)

    def rollout_inputs(self, rollout: Rollout, next_: bool = True) -> torch.Tensor:
        """(T·N, ...) network inputs for ``next_obs`` (or ``obs``) of a rollout."""
        obs = rollout.next_obs if next_ else rollout.obs
        feats = rollout.next_features if next_ else rollout.features
        return self.inputs(flatten_obs(obs), None if feats is None else feats.flatten(0, 1))

    def transitions(self, rollout: Rollout) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(T·N, ...) network inputs of ``obs`` and ``next_obs`` and the (T·N, ...) actions between them."""
        return self.rollout_inputs(rollout, next_=False), self.rollout_inputs(rollout), rollout.actions.flatten(0, 1)

    def make_optimizer(self, modules: list[nn.Module]) -> None:
        self.optimizer = torch.optim.Adam([p for m in modules for p in m.parameters()], lr=self.lr)

    def make_inverse_dynamics(self) -> None:
        """``self.embedding`` φ: input → (B, embed_dim), and ``self.inverse`` g(φ(s_t), φ(s_{t+1})) ≈ a_t
        that trains it, so φ keeps what the agent controls (ICM, E3B, NGU)."""
        self.embedding = self.make_encoder()
        self.inverse = InverseDynamicsHead(self.embed_dim, self.actions, hidden_dim=64)

    def _optimizer(self) -> torch.optim.Optimizer:
        if self.optimizer is None:
            raise ConfigError(f"{self.name} trains networks but has no optimizer; call make_optimizer(modules) "
                              "in its __init__")
        return self.optimizer

    def fit_inverse(self, rollout: Rollout, metric: str) -> dict[str, float]:
        """Train ``self.embedding`` through ``self.inverse`` on the rollout's transitions (E3B, NGU)."""
        x, next_x, actions = self.transitions(rollout)

        def loss_fn(idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
            loss = self.inverse.loss(self.embedding(x[idx]), self.embedding(next_x[idx]), actions[idx])
            return loss, {metric: loss.item()}

        return self.fit(loss_fn, len(x))

    def fit(self, loss_fn: Callable[[torch.Tensor], tuple[torch.Tensor, dict[str, float]]], n: int) -> dict[str, float]:
        """``update_epochs`` passes of shuffled minibatches of ``n`` samples; mean of each metric."""
        totals: dict[str, float] = {}
        steps = 0
        optimizer = self._optimizer()
        for _ in range(self.update_epochs):
            for idx in torch.randperm(n, device=self.coef.device).split(self.batch_size):
                loss, metrics = loss_fn(idx)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                steps += 1
                for k, v in metrics.items():
                    totals[k] = totals.get(k, 0.0) + v
        return {k: v / max(steps, 1) for k, v in totals.items()}

    @property
    def name(self) -> str:
        return getattr(self, "registry_name", type(self).__name__)

    # -- lifecycle -------------------------------------------------------------------------------
    def step_bonus(self, obs: Obs, actions: torch.Tensor, next_obs: Obs, dones: torch.Tensor,
                   features: torch.Tensor | None) -> torch.Tensor:
        """(N,) raw bonus of one env step, updating episodic state; only step-wise rewards define it."""
        raise NotImplementedError

    def batch_bonus(self, rollout: Rollout) -> torch.Tensor:
        """(T, N) raw bonus of a whole rollout; step-wise rewards replay it through ``step_bonus``."""
        T = rollout.shape[0]
        if len(self._watched) == T:
            return torch.stack(self._watched)
        if self._watched:
            raise ConfigError(f"{self.name} watched {len(self._watched)} steps but the rollout has {T}; "
                              "call watch() on every env step or never")
        index = lambda o, t: {k: v[t] for k, v in o.items()} if isinstance(o, dict) else o[t]  # noqa: E731
        feats = rollout.next_features
        return torch.stack([
            self.step_bonus(index(rollout.obs, t), rollout.actions[t], index(rollout.next_obs, t), rollout.dones[t],
                            None if feats is None else feats[t])
            for t in range(T)])

    @torch.no_grad()
    def watch(self, obs: Obs, actions: torch.Tensor, next_obs: Obs, dones: torch.Tensor,
              features: torch.Tensor | None = None) -> None:
        """Record one env step (tensors (N, ...); ``features`` of ``next_obs``) for step-wise rewards."""
        if type(self).step_bonus is IntrinsicReward.step_bonus:
            return
        if self.use_agent_features and features is None:
            return  # compute() will replay the rollout's stored features instead
        self._watched.append(self.step_bonus(obs, actions, next_obs, dones, features).float())

    @torch.no_grad()
    def compute(self, rollout: Rollout) -> torch.Tensor:
        """(T, N) float32 bonus: ``coef · normalise(raw)``."""
        raw = self.batch_bonus(rollout).float()
        self._watched = []
        if raw.shape != rollout.shape:
            raise ShapeError(f"{self.name} produced a bonus of shape {tuple(raw.shape)}, expected {rollout.shape}")
        scaled = (self.coef * self.normalise(raw)).float()
        self._last = {"bonus_raw_mean": raw.mean().item(), "bonus_mean": scaled.mean().item(),
                      "bonus_max": scaled.max().item()}
        return scaled

    def normalise(self, raw: torch.Tensor) -> torch.Tensor:
        """(T, N) raw → normalised bonus (see the class docstring for the modes)."""
        if self.normalise_mode == "none":
            return raw
        if self.normalise_mode in ("rms", "std"):
            self.bonus_stats.update(raw)
            scale = self.bonus_stats.std
            if self.normalise_mode == "rms":
                scale = (scale.square() + self.bonus_stats.mean.square()).sqrt()
            return raw / (scale.float() + 1e-8)
        returns = []
        for r in raw.double():  # RND's forward filter: per-env discounted intrinsic return, not reset at dones
            self.intrinsic_return.mul_(self.gamma).add_(r)
            returns.append(self.intrinsic_return.clone())
        self.return_stats.update(torch.stack(returns))
        return raw / (self.return_stats.std.float() + 1e-8)

    def learn(self, rollout: Rollout) -> dict[str, float]:
        """Train this reward's networks on the rollout; rewards without networks keep the default."""
        return {}

    def update(self, rollout: Rollout) -> dict[str, float]:
        """Train, then decay the coefficient; returns ``{loss…, bonus_mean, bonus_raw_mean, coef, memory_size}``."""
        metrics = {**self.learn(rollout), **self._last, "coef": self.coef.item(),
                   "memory_size": float(self.memory_size())}  # entries in bounded memories/tables, logged
        self.coef.mul_(self.coef_decay)
        return metrics

    def memory_size(self) -> int:
        """Entries held in bounded memories / tables (0 for rewards without any)."""
        return 0

    def extra_repr(self) -> str:
        return f"coef={self.coef.item():g}, normalise={self.normalise_mode}, agent_features={self.use_agent_features}"


def check_positive(name: str, **values: float) -> None:
    """One-line ConfigError for a non-positive option."""
    for key, value in values.items():
        if not value > 0 or (isinstance(value, float) and math.isnan(value)):
            raise ConfigError(f"intrinsic reward {name!r} option {key!r} must be > 0, got {value!r}")
