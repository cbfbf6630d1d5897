"""Cross-modal goal reward: how close the observation is to a text or audio goal in a shared space."""

from __future__ import annotations

from functools import partial

import gymnasium as gym
import torch
import torch.nn.functional as F
from einops import rearrange
from omegaconf import OmegaConf
from torch import nn

from mmssl import checkpoint as ckpt
from mmssl.config import registry_kwargs, stored_config
from mmssl.encoders.heads import mlp
from mmssl.encoders.memo import RowMemo
from mmssl.errors import ConfigError, ShapeError
from mmssl.registry import ENCODERS, INTRINSIC_REWARDS
from mmssl.rl.intrinsic.base import IntrinsicReward, select_obs
from mmssl.rl.storage import Obs, Rollout, flatten_obs
from mmssl.types import AUDIO, IMAGE, OBS, TEXT

MODES = ("similarity", "increase")


def load_encoders(path: str, modalities: tuple[str, ...]) -> tuple[dict[str, nn.Module], dict[str, nn.Module]]:
    """Encoders for ``modalities`` (and their joint-space projections) from a pretraining run or checkpoint.

    A pretraining checkpoint holds ``config.encoder.<modality>`` (registry name and options) and the
    model's ``encoders.<modality>.*`` weights; a cross-modal objective's linear projections into the
    joint space are found under ``…projections.<modality>.`` (a linear map or an MLP, rebuilt from its
    weights; the goal_map encoder reads them the same way). ``path``: a ``step_*.pt`` file or a run folder
    (its newest valid checkpoint).
    """
    _, ckpt_path, state = ckpt.find(path)
    stored = stored_config(state["config"], ckpt_path) if isinstance(state.get("config"), dict) else {}
    spec = OmegaConf.to_container(stored.encoder) if "encoder" in stored else {}  # inert: no resolvers, no init weights
    encoders, projections = {}, {}
    for m in modalities:
        if m not in spec:
            raise ConfigError(f"checkpoint {path} has encoders for {sorted(spec)}, not {m!r}; "
                              "set obs_modality / goal_modality to modalities it was pretrained on")
        encoder = ENCODERS.build(spec[m]["name"], **registry_kwargs(spec[m]))
        ckpt.load_matching(encoder, ckpt.encoder_weights(state["model"], m), what=f"{m} encoder")
        encoders[m] = encoder
        proj = {k.split(f"projections.{m}.", 1)[1]: v for k, v in state["model"].items() if f"projections.{m}." in k}
        if proj:
            projections[m] = projection_from_state(proj, what=f"{m} projection of {path}")
    return encoders, projections


def projection_from_state(state: dict, what: str) -> nn.Module:
    """A joint-space projection rebuilt from its weights: ``weight``/``bias`` (linear) or an ``mlp`` (heads.py),
    whose layer indices and BatchNorm entries say its depth and widths."""
    if set(state) == {"weight", "bias"}:
        module = nn.Linear(state["weight"].shape[1], state["weight"].shape[0])
    else:
        linears = sorted({int(k.split(".")[0]) for k, v in state.items() if k.endswith("weight") and v.ndim == 2})
        batch_norm = any(k.endswith("running_mean") for k in state)
        if not linears:
            raise ConfigError(f"cannot rebuild the {what}: no linear layers among {sorted(state)}")
        first, last = state[f"{linears[0]}.weight"], state[f"{linears[-1]}.weight"]
        module = mlp(first.shape[1], first.shape[0], last.shape[0], layers=len(linears), batch_norm=batch_norm)
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise ConfigError(f"cannot rebuild the {what}: {str(exc).splitlines()[0]}") from None
    return module


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
    uint8 → [0, 1]) and resized to ``image_size`` when given; with ``agent_tile: t`` only the t×t picture
    under the agent is embedded (DigitGrid's (2, G·t, G·t) frames: pictures, agent mask), so the bonus
    says how well the tile the agent stands on matches the instruction. Shapes: rollout (T, N) → bonus (T, N).
    """

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, num_envs: int,
                 checkpoint: str | None = None, encoders: dict | None = None, projections: dict | None = None,
                 obs_modality: str = IMAGE, goal_modality: str = TEXT, goal_key: str | None = "mission",
                 goal: list | None = None, mode: str = "similarity", image_size: int | None = None,
                 agent_tile: int | None = None, coef: float = 0.1, normalise: str = "none", **common):
        super().__init__(observation_space, action_space, num_envs, coef=coef, normalise=normalise, **common)
        if self.use_agent_features:
            raise ConfigError("goal_similarity embeds observations with its own cross-modal encoder; "
                              "set use_agent_features=false")
        if mode not in MODES:
            raise ConfigError(f"goal_similarity mode must be one of {list(MODES)}, got {mode!r}")
        if (checkpoint is None) == (encoders is None):
            raise ConfigError("goal_similarity needs exactly one of checkpoint (a pretraining run folder or step_*.pt) "
                              "or encoders ({modality: module})")
        pair = (obs_modality, goal_modality)
        found, loaded_projections = load_encoders(checkpoint, pair) if checkpoint is not None else (dict(encoders), {})
        projections = {**loaded_projections, **dict(projections or {})}
        missing = [m for m in pair if m not in found]
        if missing:
            raise ConfigError(f"goal_similarity needs encoders for {list(pair)}; missing {missing}")
        if goal is None and (goal_key is None or not isinstance(observation_space, gym.spaces.Dict)
                             or goal_key not in observation_space.spaces):
            raise ConfigError(f"goal_similarity reads the goal from observation key {goal_key!r}, which the "
                              "observation space lacks; set goal_key or give a fixed goal")
        self.obs_modality, self.goal_modality, self.goal_key, self.mode = obs_modality, goal_modality, goal_key, mode
        self.image_size, self.agent_tile = image_size, agent_tile
        self.encoders = nn.ModuleDict({m: found[m] for m in pair}).requires_grad_(False).eval()
        self.projections = nn.ModuleDict(projections).requires_grad_(False).eval()
        self.register_buffer("goal", None if goal is None else torch.as_tensor(goal, dtype=self.goal_dtype))
        self.memo_obs, self.memo_goal = RowMemo(), RowMemo()  # loading weights → forget what was remembered
        self.register_load_state_dict_post_hook(lambda module, _keys: (module.memo_obs.clear(), module.memo_goal.clear()))

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
        if self.agent_tile:
            image = self.tile_under_agent(image)
        if self.image_size is not None:
            image = F.interpolate(image, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        # frozen towers: each distinct picture and goal is embedded once per run (mmssl/encoders/memo.py)
        z = self.memo_obs(partial(self.embed, self.obs_modality), image, remember=True)
        if self.goal is not None:
            goal_z = self.embed(self.goal_modality, self.goal[None]).expand(len(z), -1)
        else:
            goal_z = self.memo_goal(partial(self.embed, self.goal_modality), obs[self.goal_key].to(self.goal_dtype),
                                    remember=True)
        if goal_z.shape[-1] != z.shape[-1]:
            raise ShapeError(f"the {self.obs_modality} embedding has {z.shape[-1]} dims but the {self.goal_modality} "
                             f"one {goal_z.shape[-1]}; give projections into a shared space")
        return (z * goal_z).sum(-1)

    def tile_under_agent(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 2, G·t, G·t) → (B, 1, t, t): the channel-0 picture of the tile where channel 1 marks the agent."""
        t = self.agent_tile
        if image.shape[1] != 2 or image.shape[-1] % t or image.shape[-2] % t:
            raise ShapeError(f"agent_tile={t} reads (B, 2, G·{t}, G·{t}) images (pictures, agent mask), "
                             f"got {tuple(image.shape)}")
        tiles = rearrange(image, "b c (gh t1) (gw t2) -> b (gh gw) c t1 t2", t1=t, t2=t)  # (B, G², 2, t, t)
        cell = tiles[:, :, 1].flatten(2).mean(-1).argmax(1)  # (B,) the agent's tile
        return tiles[torch.arange(len(tiles)), cell, :1]

    def memory_size(self) -> int:
        """Remembered embeddings (bounded by RowMemo.max_entries each)."""
        return len(self.memo_obs) + len(self.memo_goal)

    @property
    def goal_dtype(self) -> torch.dtype:
        return torch.long if self.goal_modality == TEXT else torch.float32

    def batch_bonus(self, rollout: Rollout) -> torch.Tensor:
        bonus = self.similarity(flatten_obs(rollout.next_obs))
        if self.mode == "increase":
            bonus = bonus - self.similarity(flatten_obs(rollout.obs))
        return bonus.reshape(rollout.shape)
