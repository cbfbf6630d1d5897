"""Auxiliary self-supervised objectives on PPO rollouts, and the adapter that feeds rollouts to any objective.

A PPO minibatch becomes a ``Batch``: ``data["obs"]`` (B, ...) observations, ``extra["next_obs"]``,
``extra["actions"]``, ``extra["dones"]``. Every objective registered for modality ``obs`` runs on it
with the agent's encoders (``agent.encoders``) — the generic ones (``simclr``, ``moco_v3``, ``byol``
with ``augment: random_shift``) as well as the RL-specific ones below, which read the transition
(``next_obs``, ``actions``) as well. Each is configured exactly like a pretraining objective:
``objective: {slot: {name, weight, **options}}``.
"""

from __future__ import annotations

from collections.abc import Mapping

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmssl.collectives import gather, rank
from mmssl.config import registry_kwargs
from mmssl.encoders.base import Encoder
from mmssl.errors import ConfigError
from mmssl.objectives.base import Objective, ema_update
from mmssl.registry import OBJECTIVES
from mmssl.rl.actions import ActionCodec, InverseDynamicsHead
from mmssl.types import OBS, Batch, ObjectiveOutput


def rollout_batch(obs, next_obs, actions: torch.Tensor, dones: torch.Tensor) -> Batch:
    """Minibatch tensors (B, ...) → the ``Batch`` auxiliary objectives read."""
    return Batch({OBS: obs}, extra={"next_obs": next_obs, "actions": actions, "dones": dones})


def bilinear_info_nce(anchors: torch.Tensor, positives: torch.Tensor, W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """CURL's bilinear InfoNCE: logits ``a W pᵀ`` (B, B), row-max subtracted, CE against the diagonal.

    anchors, positives: (B, D); W: (D, D). Returns (loss, top-1 accuracy of the positive). Under
    torch.distributed (multi-rank PPO) the positives are gathered with gradients and each rank's anchors
    are scored against all W·B of them (local loss, targets offset by rank·B), as in the pretraining losses.
    """
    keys = gather(positives)
    logits = anchors @ W @ keys.T
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()
    target = torch.arange(len(anchors), device=anchors.device) + rank() * len(anchors)
    return F.cross_entropy(logits, target), (logits.argmax(1) == target).float().mean()


def _transition(objective: Objective, batch: Batch, key: str) -> torch.Tensor:
    if key not in batch.extra:
        raise ConfigError(f"objective {objective.registry_name!r} needs {key!r} in batch.extra (a rollout batch); "
                          f"it has {sorted(batch.extra)}")
    return batch.extra[key]


class _MomentumRL(Objective):
    """Shared parts: a momentum (EMA) copy of the encoder and ``augment`` views (default ``random_shift``)."""

    def __init__(self, encoders, modality, momentum, augment, augment_kwargs):
        super().__init__(encoders, modality)
        if not 0.0 <= momentum <= 1.0:
            raise ConfigError(f"{self.registry_name} momentum must be in [0, 1], got {momentum}")
        self.momentum = momentum
        self.target_encoder = self.momentum_copy(encoders[self.modality])
        self.augment = self.build_augment(augment, augment_kwargs)

    def after_step(self, encoders: Mapping[str, Encoder], progress: float) -> None:
        ema_update(self.target_encoder, encoders[self.modality], self.momentum)
        for online, target in self.momentum_pairs():
            ema_update(target, online, self.momentum)

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return []


@OBJECTIVES.register("curl", modalities=(OBS,))
class CURL(_MomentumRL):
    """CURL (Laskin, Srinivas & Abbeel 2020): bilinear InfoNCE between two augmented views of each observation.

    ``q = f(aug₁(o))`` (online encoder, (B, D)), ``k = f_ξ(aug₂(o))`` (momentum encoder, no gradient),
    ``L = CE(q W kᵀ, diag)`` with a learned W (D, D); ``ξ ← m·ξ + (1-m)·θ`` after every step
    (CURL: m = 0.95 for the encoder).
    """

    def __init__(self, encoders: Mapping[str, Encoder], modality: str | None = None, momentum: float = 0.95,
                 augment: str | None = None, augment_kwargs: dict | None = None):
        super().__init__(encoders, modality, momentum, augment, augment_kwargs)
        dim = encoders[self.modality].dim
        self.W = nn.Parameter(torch.rand(dim, dim) * 0.01)  # CURL initialises W with small uniform values

    def forward(self, batch: Batch, encoders: Mapping[str, Encoder]) -> ObjectiveOutput:
        x = self.inputs(batch)
        q = encoders[self.modality](self.augment(x)).pooled
        with torch.no_grad():
            k = self.target_encoder(self.augment(x)).pooled
        loss, accuracy = bilinear_info_nce(q, k, self.W)
        return ObjectiveOutput(loss, {"positive_accuracy": accuracy.item()})


@OBJECTIVES.register("atc", modalities=(OBS,))
class ATC(_MomentumRL):
    """Augmented Temporal Contrast (Stooke et al. 2021): match o_t to o_{t+1} against the batch's other futures.

    anchor ``a = h(c(f(aug(o_t)))) + c(f(aug(o_t)))`` (compressor c: linear to ``latent_dim``, residual
    predictor h: MLP); positive ``p = c_ξ(f_ξ(aug(o_{t+1})))`` through momentum copies; bilinear InfoNCE
    ``CE(a W pᵀ, diag)``. ``next_obs`` is the true successor, so pairs never cross episode boundaries.
    ATC's encoder momentum is 0.99 (τ = 0.01).
    """

    def __init__(self, encoders: Mapping[str, Encoder], modality: str | None = None, latent_dim: int = 128,
                 hidden_dim: int = 512, momentum: float = 0.99, augment: str | None = None,
                 augment_kwargs: dict | None = None):
        super().__init__(encoders, modality, momentum, augment, augment_kwargs)
        dim = encoders[self.modality].dim
        self.compressor = nn.Linear(dim, latent_dim)
        self.residual_predictor = nn.Sequential(nn.Linear(latent_dim, hidden_dim), nn.ReLU(),
                                                nn.Linear(hidden_dim, latent_dim))
        self.target_compressor = self.momentum_copy(self.compressor)
        self.W = nn.Parameter(torch.rand(latent_dim, latent_dim) * 0.01)

    def momentum_pairs(self):
        return [(self.compressor, self.target_compressor)]

    def forward(self, batch: Batch, encoders: Mapping[str, Encoder]) -> ObjectiveOutput:
        x, x_next = self.inputs(batch), _transition(self, batch, "next_obs")
        c = self.compressor(encoders[self.modality](self.augment(x)).pooled)
        anchor = c + self.residual_predictor(c)
        with torch.no_grad():
            positive = self.target_compressor(self.target_encoder(self.augment(x_next)).pooled)
        loss, accuracy = bilinear_info_nce(anchor, positive, self.W)
        return ObjectiveOutput(loss, {"positive_accuracy": accuracy.item()})


@OBJECTIVES.register("spr", modalities=(OBS,))
class SPR(_MomentumRL):
    """Self-Predictive Representations, one step (Schwarzer et al. 2021): predict the next latent from (z_t, a_t).

    ``z_t = f(aug(o_t))`` (B, D); transition ``ẑ = T(z_t, a_t)`` (MLP on [z, onehot(a)]); online
    projection + prediction ``y = q(g(ẑ))``; target ``ȳ = g_ξ(f_ξ(aug(o_{t+1})))`` via momentum copies;
    ``L = 2 - 2·cos(y, ȳ)`` averaged over the batch (SPR's normalised L2). SPR's momentum: 0 for the
    encoder in the Atari-100k setting; 0.99 here by default because PPO takes many small steps.
    """

    def __init__(self, encoders: Mapping[str, Encoder], modality: str | None = None, action_space=None,
                 projection_dim: int = 128, hidden_dim: int = 256, momentum: float = 0.99,
                 augment: str | None = None, augment_kwargs: dict | None = None):
        super().__init__(encoders, modality, momentum, augment, augment_kwargs)
        dim = encoders[self.modality].dim
        self.actions = ActionCodec(action_space, f"objective {self.registry_name!r}")
        self.transition = nn.Sequential(nn.Linear(dim + self.actions.dim, hidden_dim), nn.ReLU(),
                                        nn.Linear(hidden_dim, dim))
        self.projector = nn.Sequential(nn.Linear(dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, projection_dim))
        self.predictor = nn.Sequential(nn.Linear(projection_dim, hidden_dim), nn.ReLU(),
                                       nn.Linear(hidden_dim, projection_dim))
        self.target_projector = self.momentum_copy(self.projector)

    def momentum_pairs(self):
        return [(self.projector, self.target_projector)]

    def forward(self, batch: Batch, encoders: Mapping[str, Encoder]) -> ObjectiveOutput:
        x, x_next = self.inputs(batch), _transition(self, batch, "next_obs")
        actions = _transition(self, batch, "actions")
        z = encoders[self.modality](self.augment(x)).pooled
        z_next = self.transition(torch.cat([z, self.actions.encode(actions)], dim=1))
        prediction = F.normalize(self.predictor(self.projector(z_next)), dim=1)
        with torch.no_grad():
            target = F.normalize(self.target_projector(self.target_encoder(self.augment(x_next)).pooled), dim=1)
        cosine = (prediction * target).sum(dim=1)
        return ObjectiveOutput((2 - 2 * cosine).mean(), {"cosine": cosine.mean().item()})


@OBJECTIVES.register("inverse_dynamics", modalities=(OBS,))
class InverseDynamics(Objective):
    """Inverse dynamics (Pathak et al. 2017's ICM inverse model): predict a_t from (f(o_t), f(o_{t+1})).

    ``â = MLP([f(o_t), f(o_{t+1})])``; cross-entropy for discrete actions (B, n logits), MSE for
    continuous ones (B, A). Both observations pass through the online encoder, so the loss shapes
    features towards what the agent controls.
    """

    def __init__(self, encoders: Mapping[str, Encoder], modality: str | None = None, action_space=None,
                 hidden_dim: int = 256, augment: str | None = "identity", augment_kwargs: dict | None = None):
        super().__init__(encoders, modality)
        dim = encoders[self.modality].dim
        self.actions = ActionCodec(action_space, f"objective {self.registry_name!r}")
        self.head = InverseDynamicsHead(dim, self.actions, hidden_dim)
        self.augment = self.build_augment(augment, augment_kwargs)

    def forward(self, batch: Batch, encoders: Mapping[str, Encoder]) -> ObjectiveOutput:
        x, x_next = self.inputs(batch), _transition(self, batch, "next_obs")
        encoder = encoders[self.modality]
        both = encoder(self.augment(_cat(x, x_next))).pooled
        z, z_next = both.chunk(2)
        prediction, actions = self.head(z, z_next), _transition(self, batch, "actions")
        return ObjectiveOutput(self.actions.loss(prediction, actions), self.actions.metrics(prediction, actions))


@OBJECTIVES.register("obs_reconstruction", modalities=(OBS,))
class ObsReconstruction(Objective):
    """Observation reconstruction (SAC-AE, Yarats et al. 2021): decode o_t from f(o_t).

    ``ô = MLP(f(o))`` reshaped to the observation; ``L = ‖ô - o‖² (mean) + λ‖f(o)‖²`` with λ =
    ``latent_penalty`` (SAC-AE's L2 on the latent). uint8 observations are targets in [0, 1]; vector
    observations are reconstructed as given (normalised when the run normalises them).
    """

    def __init__(self, encoders: Mapping[str, Encoder], modality: str | None = None, obs_shape: list[int] | None = None,
                 hidden_dim: int = 256, latent_penalty: float = 1e-6):
        super().__init__(encoders, modality)
        if not obs_shape:
            raise ConfigError("obs_reconstruction needs obs_shape (filled from the env by build_aux_objectives)")
        self.obs_shape = tuple(int(s) for s in obs_shape)
        self.latent_penalty = latent_penalty
        self.decoder = nn.Sequential(nn.Linear(encoders[self.modality].dim, hidden_dim), nn.ReLU(),
                                     nn.Linear(hidden_dim, int(np.prod(self.obs_shape))))

    def forward(self, batch: Batch, encoders: Mapping[str, Encoder]) -> ObjectiveOutput:
        x = self.inputs(batch)
        if isinstance(x, dict):
            raise ConfigError("obs_reconstruction reads tensor observations, not dicts")
        z = encoders[self.modality](x).pooled
        target = (x.float() / 255.0 if x.dtype == torch.uint8 else x.float()).flatten(1)
        reconstruction = self.decoder(z)
        mse = F.mse_loss(reconstruction, target)
        return ObjectiveOutput(mse + self.latent_penalty * z.pow(2).sum(1).mean(), {"reconstruction_mse": mse.item()})


def _cat(a, b):
    if isinstance(a, dict):
        return {k: torch.cat([a[k], b[k]]) for k in a}
    return torch.cat([a, b])


#: keys of an objective config that the PPO loop, not the objective, reads
RUN_KEYS = ("name", "weight")


def build_aux_objectives(spec: Mapping | None, encoders: Mapping[str, Encoder], observation_space: gym.Space,
                         action_space: gym.Space) -> tuple[nn.ModuleDict, dict[str, float]]:
    """``{slot: {name, weight, **options}}`` → (ModuleDict of objectives, weights), env facts filled in.

    Objectives whose constructor takes ``action_space`` or ``obs_shape`` get them from the env; every
    objective must read modality ``obs`` (``modality`` defaults to it).
    """
    objectives, weights = {}, {}
    for slot, node in (spec or {}).items():
        if not isinstance(node, Mapping) or "name" not in node:
            raise ConfigError(f"objective.{slot} needs a 'name' (`mmssl list objectives`)")
        kwargs = registry_kwargs(node, RUN_KEYS)
        accepted = {p.name for p in OBJECTIVES.parameters(node["name"])}
        if "modality" in accepted:
            kwargs.setdefault("modality", OBS)
        if "action_space" in accepted:
            kwargs.setdefault("action_space", action_space)
        if "obs_shape" in accepted and getattr(observation_space, "shape", None):
            kwargs.setdefault("obs_shape", list(observation_space.shape))
        if kwargs.get("modality") != OBS:
            raise ConfigError(f"objective.{slot} reads modality {kwargs.get('modality')!r}; in RL the agent's encoder "
                              f"is modality 'obs'; set objective.{slot}.modality=obs")
        objectives[slot] = OBJECTIVES.build(node["name"], encoders, **kwargs)
        weights[slot] = float(node.get("weight", 1.0))
    return nn.ModuleDict(objectives), weights


__all__ = ["ATC", "CURL", "SPR", "InverseDynamics", "ObsReconstruction", "build_aux_objectives", "rollout_batch"]
