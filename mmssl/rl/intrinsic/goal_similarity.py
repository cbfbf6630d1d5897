"""Cross-modal goal reward: how close the observation is to a text or audio goal in a shared space."""

from __future__ import annotations

import gymnasium as gym
import torch
import torch.nn.functional as F
from torch import nn

from mmssl.config import registry_kwargs
from mmssl.errors import ConfigError, ShapeError
from mmssl.registry import ENCODERS, INTRINSIC_REWARDS
from mmssl.rl.intrinsic.base import IntrinsicReward, select_obs
from mmssl.rl.storage import Obs, Rollout, flatten_obs
from mmssl.train import checkpoint as ckpt
from mmssl.types import AUDIO, IMAGE, OBS, TEXT

MODES = ("similarity", "increase")


def load_encoders(path: str, modalities: tuple[str, ...]) -> dict[str, nn.Module]:
    """Encoders for ``modalities`` rebuilt from a pretraining checkpoint's config and weights.

    A pretraining checkpoint holds ``config.encoder.<modality>`` (registry name and options) and the
    model's ``encoders.<modality>.*`` weights.
    """
    state = ckpt.load(path)
    spec = (state.get("config") or {}).get("encoder") or {}
    encoders = {}
    for m in modalities:
        if m not in spec:
            raise ConfigError(f"checkpoint {path} has encoders for {sorted(spec)}, not {m!r}; "
                              "set obs_modality / goal_modality to modalities it was pretrained on")
        encoder = ENCODERS.build(spec[m]["name"], **registry_kwargs(spec[m]))
        prefix = f"encoders.{m}."
        weights = {k[len(prefix):]: v for k, v in state["model"].items() if k.startswith(prefix)}
        ckpt.load_matching(encoder, weights, what=f"{m} encoder")
        encoders[m] = encoder
    return encoders


@INTRINSIC_REWARDS.register("goal_similarity", modalities=(OBS, IMAGE, TEXT, AUDIO))
class GoalSimilarity(IntrinsicReward):
    """Goal-similarity reward, the cross-modal analogue of CLIP-reward shaping (MineDojo's MineCLIP,
    Fan et al. 2022; "Vision-Language Models are Zero-Shot Reward Models", Rocamonde et al. 2023).

    b_t = cos(g(s_{t+1}), h(goal)) with g the observation (image/obs) encoder and h the goal (text/audio)
    encoder of a cross-modal pair, both frozen, optionally followed by ``projections`` into the shared
    space; with ``mode: increase`` b_t = cos(g(s_{t+1}), h) − cos(g(s_t), h), a potential-based shaping
    (Ng et al. 1999, γ = 1) that pays for getting closer rather than for standing close. The encoders
    come from a pretraining ``checkpoint`` or are given as modules (``encoders``); the goal is read from
    the observation dict at ``goal_key`` ((N, L) token ids or (N, samples) audio) or fixed (``goal``).
    Observations at ``obs_key`` are preprocessed like every reward's (channel-last → (N, C, H, W),
    uint8 → [0, 1]) and resized to ``image_size`` when given. Shapes: rollout (T, N) → bonus (T, N).
    """

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, num_envs: int,
                 checkpoint: str | None = None, encoders: dict | None = None, projections: dict | None = None,
                 obs_modality: str = IMAGE, goal_modality: str = TEXT, goal_key: str | None = "mission",
                 goal: list | None = None, mode: str = "similarity", image_size: int | None = None, **common):
        common.setdefault("normalise", "none")
        common.setdefault("coef", 0.1)
        super().__init__(observation_space, action_space, num_envs, **common)
        if self.use_agent_features:
            raise ConfigError("goal_similarity embeds observations with its own cross-modal encoder; "
                              "set use_agent_features=false")
        if mode not in MODES:
            raise ConfigError(f"goal_similarity mode must be one of {list(MODES)}, got {mode!r}")
        if (checkpoint is None) == (encoders is None):
            raise ConfigError("goal_similarity needs exactly one of checkpoint (a pretraining run's .pt file) "
                              "or encoders ({modality: module})")
        pair = (obs_modality, goal_modality)
        found = load_encoders(checkpoint, pair) if checkpoint is not None else dict(encoders)
        missing = [m for m in pair if m not in found]
        if missing:
            raise ConfigError(f"goal_similarity needs encoders for {list(pair)}; missing {missing}")
        if goal is None and (goal_key is None or not isinstance(observation_space, gym.spaces.Dict)
                             or goal_key not in observation_space.spaces):
            raise ConfigError(f"goal_similarity reads the goal from observation key {goal_key!r}, which the "
                              "observation space lacks; set goal_key or give a fixed goal")
        self.obs_modality, self.goal_modality, self.goal_key, self.mode = obs_modality, goal_modality, goal_key, mode
        self.image_size = image_size
        self.encoders = nn.ModuleDict({m: found[m] for m in pair}).requires_grad_(False).eval()
        self.projections = nn.ModuleDict(dict(projections or {})).requires_grad_(False).eval()
        self.register_buffer("goal", None if goal is None else torch.as_tensor(goal, dtype=self.goal_dtype))

    def train(self, mode: bool = True):
        super().train(mode)
        self.encoders.eval()  # frozen pretrained towers: BatchNorm/dropout must stay in inference mode
        self.projections.eval()
        return self

    def embed(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """(B, ...) → (B, D) unit-norm embedding in the shared space."""
        out = self.encoders[modality](x)
        z = out.pooled if hasattr(out, "pooled") else out
        if modality in self.projections:
            z = self.projections[modality](z)
        return F.normalize(z.float(), dim=-1)

    def similarity(self, obs: Obs) -> torch.Tensor:
        """(B, ...) observations → (B,) cosine similarity with their goals."""
        image = self.preprocess(select_obs(obs, self.obs_key))
        if self.image_size is not None:
            image = F.interpolate(image, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        z = self.embed(self.obs_modality, image)
        if self.goal is not None:
            goal_z = self.embed(self.goal_modality, self.goal[None]).expand(len(z), -1)
        else:
            goals = obs[self.goal_key]
            unique, index = torch.unique(goals, dim=0, return_inverse=True)  # encode each distinct goal once
            goal_z = self.embed(self.goal_modality, unique.to(self.goal_dtype))[index]
        if goal_z.shape[-1] != z.shape[-1]:
            raise ShapeError(f"the {self.obs_modality} embedding has {z.shape[-1]} dims but the {self.goal_modality} "
                             f"one {goal_z.shape[-1]}; give projections into a shared space")
        return (z * goal_z).sum(-1)

    @property
    def goal_dtype(self) -> torch.dtype:
        return torch.long if self.goal_modality == TEXT else torch.float32

    def batch_bonus(self, rollout: Rollout) -> torch.Tensor:
        bonus = self.similarity(flatten_obs(rollout.next_obs))
        if self.mode == "increase":
            bonus = bonus - self.similarity(flatten_obs(rollout.obs))
        return bonus.reshape(rollout.shape)
