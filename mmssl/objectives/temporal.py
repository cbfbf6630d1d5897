"""Temporal objectives: structure along time — future prediction, nearby-step similarity, order, continuation.

Two kinds of input are read, and ``step_ndim`` tells them apart:

* **sequences of steps** ``(B, T, ...)`` — one more dimension than a batch of single items of the
  modality (image frames ``(B, T, C, H, W)``, RL trajectories ``(B, T, obs_dim)``); each step is
  encoded on its own and its pooled feature used, giving ``(B, T, D)``;
* **raw sequences** — text ids ``(B, L)``, waveforms ``(B, samples)``, single images: the encoder's
  tokens ``(B, N, D)`` are the time axis (or, for order/continuation tasks, slices of the raw input
  are encoded separately, so no token sees another segment).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from mmssl.collectives import gather, rank
from mmssl.encoders.base import Encoder
from mmssl.encoders.heads import mlp
from mmssl.errors import ConfigError, ShapeError
from mmssl.objectives.base import Objective
from mmssl.objectives.contrastive import nt_xent
from mmssl.objectives.predictive import require_tokens, time_steps
from mmssl.registry import OBJECTIVES
from mmssl.types import Batch, ObjectiveOutput

#: ndim of a batch of single items per modality; one more means a (B, T, ...) sequence of steps
STEP_NDIM = {"image": 4, "audio": 2, "text": 2, "obs": 2}
ALL = ("image", "audio", "text", "obs")


class _Temporal(Objective):
    """Shared sequence handling: which layout the input has, per-step features, segment encoding."""

    def __init__(self, encoders, modality, step_ndim, augment, augment_kwargs):
        super().__init__(encoders, modality)
        self.step_ndim = step_ndim or STEP_NDIM[self.modality]
        self.augment = self.build_augment(augment, augment_kwargs)

    def is_steps(self, x: torch.Tensor) -> bool:
        if x.ndim not in (self.step_ndim, self.step_ndim + 1):
            raise ShapeError(f"objective {self.registry_name!r} reads {self.modality} batches with {self.step_ndim} "
                             f"dims or sequences (B, T, ...) with {self.step_ndim + 1}, got shape {tuple(x.shape)}; "
                             "set step_ndim to the ndim of a batch of single steps")
        return x.ndim == self.step_ndim + 1

    def encode_steps(self, encoder: Encoder, steps: torch.Tensor) -> torch.Tensor:
        """(B, T, ...) steps → (B, T, D) pooled features, every step augmented and encoded on its own."""
        flat = self.augment(steps.flatten(0, 1))
        return encoder(flat).pooled.view(*steps.shape[:2], -1)

    def features(self, encoder: Encoder, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D): per-step pooled features of a step sequence, else the encoder's time-ordered tokens."""
        if self.is_steps(x):
            return self.encode_steps(encoder, x)
        return time_steps(require_tokens(encoder(self.augment(x)), self.registry_name, encoder), encoder)

    def encode_segments(self, encoder: Encoder, x: torch.Tensor, starts: torch.Tensor, length: int) -> torch.Tensor:
        """Segments ``x[b, s:s+length]`` for starts (B, S) → (B, S, D), each encoded on its own.

        Step sequences: the steps' pooled features averaged over the segment; raw sequences: the pooled
        feature of the slice (text ids (L,), waveform samples).
        """
        b, s = starts.shape
        idx = starts[:, :, None] + torch.arange(length, device=starts.device)  # (B, S, length)
        segments = x[torch.arange(b, device=x.device)[:, None, None], idx]  # (B, S, length, ...)
        if self.is_steps(x):
            return self.encode_steps(encoder, segments.flatten(1, 2)).view(b, s, length, -1).mean(2)
        return encoder(self.augment(segments.flatten(0, 1))).pooled.view(b, s, -1)

    def segment_length(self, x: torch.Tensor, requested: int | None, count: int) -> int:
        """Segment length: ``requested``, else 1 step (step sequences) or an equal share of the raw length."""
        if self.modality == "image" and not self.is_steps(x):
            raise ConfigError(f"objective {self.registry_name!r} cuts sequences into segments; images need "
                              f"(B, T, C, H, W) sequences, got {tuple(x.shape)}")
        total = x.shape[1]
        length = requested or (1 if self.is_steps(x) else total // count)
        if length < 1 or length * count > total:
            raise ShapeError(f"objective {self.registry_name!r} needs {count} segments of {length} along a length of "
                             f"{total}; use longer sequences or a smaller segment_length")
        return length


@OBJECTIVES.register("cpc", modalities=ALL, sequence=True)
class CPC(_Temporal):
    """Contrastive Predictive Coding (van den Oord, Li & Vinyals 2018).

    Encodings ``z`` (B, N, D) (tokens or per-step features) feed a GRU, ``c_t = GRU(z_≤t)``; for
    ``k = 1..K`` a linear map ``W_k`` predicts ``z_{t+k}`` and InfoNCE scores it against every encoding of
    the (rank-gathered) batch — other positions and other samples:
    ``L_k = -mean_{b,t} log exp(W_k c_t · z_{b,t+k}) / Σ_{b',t'} exp(W_k c_t · z_{b',t'})``, ``L = mean_k L_k``.
    """

    def __init__(self, encoders: Mapping[str, Encoder], modality: str | None = None, prediction_steps: int = 2,
                 context_dim: int = 128, step_ndim: int | None = None, augment: str | None = "identity",
                 augment_kwargs: dict | None = None):
        super().__init__(encoders, modality, step_ndim, augment, augment_kwargs)
        if prediction_steps < 1:
            raise ConfigError(f"cpc prediction_steps must be ≥ 1, got {prediction_steps}")
        dim = encoders[self.modality].dim
        self.context = nn.GRU(dim, context_dim, batch_first=True)
        self.predictors = nn.ModuleList(nn.Linear(context_dim, dim, bias=False) for _ in range(prediction_steps))

    def forward(self, batch: Batch, encoders: Mapping[str, Encoder]) -> ObjectiveOutput:
        z = self.features(encoders[self.modality], self.inputs(batch)).float()  # (B, N, D)
        b, n, d = z.shape
        if n <= len(self.predictors):
            raise ShapeError(f"cpc predicts {len(self.predictors)} steps ahead but the sequence has {n} "
                             "tokens/steps; use longer inputs or fewer prediction_steps")
        context, _ = self.context(z)  # (B, N, C)
        keys = gather(z).reshape(-1, d)  # (W·B·N, D)
        base = (torch.arange(b, device=z.device)[:, None] + rank() * b) * n  # (B, 1) row offset of each sample
        losses, accuracies = [], []
        with torch.autocast(z.device.type, enabled=False):  # bf16 logits are too coarse for InfoNCE
            for k, predictor in enumerate(self.predictors, start=1):
                pred = predictor(context[:, :n - k].float()).reshape(-1, d)  # (B·(N-k), D)
                target = (base + torch.arange(k, n, device=z.device)).reshape(-1)
                logits = pred @ keys.T
                losses.append(F.cross_entropy(logits, target))
                accuracies.append((logits.argmax(1) == target).float().mean())
        return ObjectiveOutput(torch.stack(losses).mean(), {"prediction_accuracy": torch.stack(accuracies).mean().item()})


@OBJECTIVES.register("temporal_contrastive", modalities=ALL, sequence=True)
class TemporalContrastive(_Temporal):
    """Temporal contrastive learning: nearby steps of a sequence are positives (TCN, Sermanet et al. 2018; ATC, Stooke et al. 2021).

    For each sample an anchor step t and a positive t' with ``1 ≤ |t' - t| ≤ max_offset`` are drawn; both
    are encoded (step sequences: each step on its own, augmented; raw sequences: tokens t and t'),
    projected, and scored with NT-Xent, the other samples' steps being negatives:
    ``L = -log exp(s(t, t')/τ) / Σ_{k≠i} exp(s_ik/τ)`` over the 2B embeddings.
    """

    def __init__(self, encoders: Mapping[str, Encoder], modality: str | None = None, max_offset: int = 2,
                 temperature: float = 0.2, projection_dim: int = 128, hidden_dim: int = 512,
                 step_ndim: int | None = None, augment: str | None = None, augment_kwargs: dict | None = None):
        super().__init__(encoders, modality, step_ndim, augment, augment_kwargs)
        if max_offset < 1 or temperature <= 0:
            raise ConfigError(f"temporal_contrastive needs max_offset ≥ 1 and temperature > 0, got {max_offset}, {temperature}")
        self.max_offset, self.temperature = max_offset, temperature
        self.projector = mlp(encoders[self.modality].dim, hidden_dim, projection_dim)

    @staticmethod
    def pairs(b: int, t: int, max_offset: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) anchor and positive positions in [0, t), ``1 ≤ |positive - anchor| ≤ max_offset``."""
        if t < 2:
            raise ShapeError(f"temporal_contrastive needs sequences of at least 2 steps/tokens, got {t}")
        anchor = torch.randint(0, t, (b,), device=device)
        offset = torch.randint(1, min(max_offset, t - 1) + 1, (b,), device=device)
        forward = anchor + offset
        positive = torch.where(forward < t, forward, anchor - offset)
        positive = torch.where(positive >= 0, positive, forward.clamp(max=t - 1))
        return anchor, positive

    def forward(self, batch: Batch, encoders: Mapping[str, Encoder]) -> ObjectiveOutput:
        x, encoder = self.inputs(batch), encoders[self.modality]
        rows = torch.arange(len(x), device=x.device)
        if self.is_steps(x):
            anchor, positive = self.pairs(len(x), x.shape[1], self.max_offset, x.device)
            frames = self.augment(torch.cat([x[rows, anchor], x[rows, positive]]))
            h1, h2 = encoder(frames).pooled.chunk(2)
        else:
            tokens = require_tokens(encoder(self.augment(x)), "temporal_contrastive", encoder)
            anchor, positive = self.pairs(len(x), tokens.shape[1], self.max_offset, x.device)
            h1, h2 = tokens[rows, anchor], tokens[rows, positive]
        z1, z2 = self.projector(torch.cat([h1, h2])).chunk(2)
        loss, accuracy = nt_xent(z1, z2, self.temperature)
        return ObjectiveOutput(loss, {"positive_accuracy": accuracy.item()})


@OBJECTIVES.register("temporal_order", modalities=ALL, sequence=True)
class TemporalOrder(_Temporal):
    """Temporal order verification: are these clips in their original order? (Shuffle and Learn, Misra et al. 2016).

    ``clip_length`` consecutive segments (step sequences: ``segment_length`` steps, default 1; raw
    sequences: an equal share of the length) are encoded separately; for a random half of the samples
    they are shuffled by a random non-identity permutation. An MLP on the concatenated features
    (B, K·D) gives the logit of "ordered": ``L = BCE(head([f_π(1); …; f_π(K)]), 1[π = id])``.
    """

    def __init__(self, encoders: Mapping[str, Encoder], modality: str | None = None, clip_length: int = 3,
                 segment_length: int | None = None, hidden_dim: int = 256, step_ndim: int | None = None,
                 augment: str | None = "identity", augment_kwargs: dict | None = None):
        super().__init__(encoders, modality, step_ndim, augment, augment_kwargs)
        if not 2 <= clip_length <= 6:
            raise ConfigError(f"temporal_order clip_length must be in [2, 6], got {clip_length}")
        self.clip_length, self.segment = clip_length, segment_length
        # every permutation, identity first; non-identity ones are drawn for the shuffled half
        self.register_buffer("permutations", torch.tensor(list(itertools.permutations(range(clip_length)))),
                             persistent=False)
        # no BatchNorm: the verdict on one sequence must not depend on its batch (RL minibatches can hold one)
        self.head = mlp(clip_length * encoders[self.modality].dim, hidden_dim, 1, 2, batch_norm=False)

    def forward(self, batch: Batch, encoders: Mapping[str, Encoder]) -> ObjectiveOutput:
        x = self.inputs(batch)
        b, k = len(x), self.clip_length
        length = self.segment_length(x, self.segment, k)
        start = (torch.rand(b, device=x.device) * (x.shape[1] - k * length + 1)).long()
        starts = start[:, None] + torch.arange(k, device=x.device) * length  # (B, K), in order
        ordered = torch.rand(b, device=x.device) < 0.5
        choice = torch.randint(1, math.factorial(k), (b,), device=x.device).masked_fill(ordered, 0)
        starts = starts.gather(1, self.permutations[choice])
        feats = self.encode_segments(encoders[self.modality], x, starts, length)  # (B, K, D)
        logit = self.head(feats.flatten(1)).squeeze(1).float()
        loss = F.binary_cross_entropy_with_logits(logit, ordered.float())
        return ObjectiveOutput(loss, {"order_accuracy": ((logit > 0) == ordered).float().mean().item()})


@OBJECTIVES.register("next_segment", modalities=ALL, sequence=True)
class NextSegment(_Temporal):
    """Next-segment prediction: is segment B the continuation of segment A? (BERT's next-sentence task, Devlin et al. 2019).

    A = ``x[s : s+ℓ]``; for a random half of the samples B = ``x[s+ℓ : s+2ℓ]`` of the same sample, for the
    other half the continuation span of another sample (with a batch of one: the swapped pair (B, A)). Segments are encoded separately (token slices, waveform
    slices, or steps of an RL trajectory averaged); an MLP on ``[a, b, a⊙b, |a-b|]`` (B, 4D) gives the
    logit of "continues": ``L = BCE(head(·), 1[B follows A])``.
    """

    def __init__(self, encoders: Mapping[str, Encoder], modality: str | None = None,
                 segment_length: int | None = None, hidden_dim: int = 256, step_ndim: int | None = None,
                 augment: str | None = "identity", augment_kwargs: dict | None = None):
        super().__init__(encoders, modality, step_ndim, augment, augment_kwargs)
        self.segment = segment_length
        self.head = mlp(4 * encoders[self.modality].dim, hidden_dim, 1, 2, batch_norm=False)  # no BN, as temporal_order

    def forward(self, batch: Batch, encoders: Mapping[str, Encoder]) -> ObjectiveOutput:
        x = self.inputs(batch)
        b = len(x)
        length = self.segment_length(x, self.segment, 2)
        start = (torch.rand(b, device=x.device) * (x.shape[1] - 2 * length + 1)).long()
        feats = self.encode_segments(encoders[self.modality], x, torch.stack([start, start + length], 1), length)
        a, cont = feats[:, 0], feats[:, 1]
        follows = torch.rand(b, device=x.device) < 0.5
        if b > 1:  # negative: the same span of another sample
            other = (torch.arange(b, device=x.device) + torch.randint(1, b, (b,), device=x.device)) % b
            second = torch.where(follows[:, None], cont, cont[other])
        else:  # no other sample: the negative is the swapped pair (B, A)
            a, second = torch.where(follows[:, None], a, cont), torch.where(follows[:, None], cont, a)
        logit = self.head(torch.cat([a, second, a * second, (a - second).abs()], 1)).squeeze(1).float()
        loss = F.binary_cross_entropy_with_logits(logit, follows.float())
        return ObjectiveOutput(loss, {"continuation_accuracy": ((logit > 0) == follows).float().mean().item()})
