"""Cross-modal binding objectives: CLIP, SigLIP and ImageBind-style multi-modality binding.

Each objective owns one projection head per modality (``projections``, an ``nn.ModuleDict`` keyed by
modality) mapping that encoder's pooled output into a joint space, and a learnable logit scale per
bound pair. The pair losses are open_clip's ``ClipLoss`` and ``SigLipLoss``. Under torch.distributed
they use open_clip's ``ClipLoss(local_loss=True, gather_with_grad=True)`` arithmetic: the embeddings
are gathered with gradients (``mmssl.collectives.gather``) and each rank computes only its
own rows (its B items against all W·B gathered ones, targets offset by rank·B), so the loss costs
O(B·W·B) per rank instead of O((W·B)²); DDP's gradient averaging of the per-rank losses gives exactly
the single-process update on the global batch.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from mmssl.collectives import gather, rank
from mmssl.encoders.base import Encoder
from mmssl.encoders.heads import mlp
from mmssl.errors import ConfigError
from mmssl.objectives.base import DEFAULT_AUGMENT, Objective
from mmssl.registry import AUGMENTATIONS, OBJECTIVES
from mmssl.types import Batch, ObjectiveOutput


def clip_loss(a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE of CLIP (Radford et al. 2021) on unit vectors a, b (B, D); ``logit_scale`` = 1/τ.

    ``L = ½ [CE(s·a bᵀ, I) + CE(s·b aᵀ, I)]``: row i's positive is column i, every other item in the
    batch is a negative, in both retrieval directions.
    """
    # imported here: open_clip is slow to import and the registry imports this module on every lookup
    from open_clip.loss import ClipLoss

    return ClipLoss()(a, b, logit_scale)


def siglip_loss(a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor, logit_bias: torch.Tensor) -> torch.Tensor:
    """Pairwise sigmoid loss of SigLIP (Zhai et al. 2023) on unit vectors a, b (B, D).

    ``L = -(1/B) Σ_ij log σ(z_ij (s·a_i·b_j + t))`` with ``z_ij = +1`` for i = j and −1 otherwise:
    every pair is an independent binary decision, no softmax over the batch.
    """
    from open_clip.loss import SigLipLoss

    return SigLipLoss()(a, b, logit_scale, logit_bias)



def clip_loss_local(a: torch.Tensor, b: torch.Tensor, all_a: torch.Tensor, all_b: torch.Tensor,
                    logit_scale: torch.Tensor, offset: int) -> torch.Tensor:
    """``clip_loss`` of this rank's rows: local a, b (B, D) against gathered all_a, all_b (W·B, D).

    ``½ [CE(s·a all_bᵀ, offset + i) + CE(s·b all_aᵀ, offset + i)]`` averaged over the B local rows —
    open_clip's ``ClipLoss(local_loss=True, gather_with_grad=True)``; the mean over ranks is the
    global-batch ``clip_loss``, and at world size 1 (offset 0, all_a = a) it is ``clip_loss`` itself.
    """
    target = torch.arange(len(a), device=a.device) + offset
    return 0.5 * (F.cross_entropy(logit_scale * a @ all_b.T, target)
                  + F.cross_entropy(logit_scale * b @ all_a.T, target))


def siglip_loss_local(a: torch.Tensor, all_b: torch.Tensor, logit_scale: torch.Tensor, logit_bias: torch.Tensor,
                      offset: int) -> torch.Tensor:
    """``siglip_loss`` of this rank's rows: local a (B, D) against every gathered b (W·B, D).

    ``-(1/B) Σ_{i local, j} log σ(z_ij (s·a_i·b_j + t))`` with ``z_ij = +1`` for j = offset + i — the
    ``gather`` variant of open_clip's distributed ``SigLipLoss``; every (i, j) pair of the global batch
    is on exactly one rank, so the mean over ranks is the global-batch ``siglip_loss``.
    """
    logits = logit_scale * a @ all_b.T + logit_bias
    labels = -torch.ones_like(logits)
    rows = torch.arange(len(a), device=a.device)
    labels[rows, rows + offset] = 1.0
    return -F.logsigmoid(labels * logits).sum() / len(a)


class _Binding(Objective):
    """Shared machinery: modality checks, projection heads, optional per-modality augmentation, pair losses.

    Logged per pair: loss, in-batch ``top1`` (own partner retrieved, both directions), ``class_top1``
    (a same-label item retrieved, when the batch has labels) and the temperature.
    """

    def __init__(self, encoders: Mapping[str, Encoder], modalities: list[str] | None = None,
                 projection_dim: int = 128, hidden_dim: int = 256, projection_layers: int = 2,
                 temperature: float = 0.07, learn_temperature: bool = True, augment: bool = False,
                 augment_kwargs: dict | None = None, anchor: str | None = None):
        name = type(self).registry_name
        mods = list(modalities) if modalities is not None else [m for m in encoders if m in self.modalities]
        bad = [m for m in mods if m not in self.modalities]
        if bad:
            raise ConfigError(f"objective {name!r} cannot bind modality {bad}; it accepts {list(self.modalities)}")
        missing = [m for m in mods if m not in encoders]
        if missing:
            raise ConfigError(f"objective {name!r} binds {mods} but has no encoder for {missing}; "
                              f"configured encoders: {sorted(encoders)}")
        if len(set(mods)) < 2:
            raise ConfigError(f"objective {name!r} needs ≥ 2 distinct modalities to bind, got {mods}")
        if temperature <= 0:
            raise ConfigError(f"objective {name!r} temperature must be positive, got {temperature}")
        super().__init__(encoders, mods[0])
        self.bound = mods
        self.pairs = self.make_pairs(mods, anchor)
        self.projections = nn.ModuleDict({
            m: mlp(encoders[m].dim, hidden_dim, projection_dim, projection_layers, batch_norm=False) for m in mods})
        # log of 1/τ per pair (CLIP's parametrisation, clamped at 100 as in CLIP)
        init = torch.tensor(math.log(1 / temperature))
        self.log_scales = nn.ParameterDict({
            _key(a, b): nn.Parameter(init.clone(), requires_grad=learn_temperature) for a, b in self.pairs})
        kwargs = dict(augment_kwargs or {})
        unknown = [m for m in kwargs if m not in mods]
        if augment and unknown:
            raise ConfigError(f"objective {name!r} augment_kwargs has keys {unknown} that are not bound modalities {mods}")
        self.augments = nn.ModuleDict({
            m: AUGMENTATIONS.build(DEFAULT_AUGMENT[m], **dict(kwargs.get(m) or {})) for m in mods} if augment else {})

    def make_pairs(self, mods: list[str], anchor: str | None) -> list[tuple[str, str]]:
        return list(itertools.combinations(mods, 2))

    def embed(self, batch: Batch, encoders: Mapping[str, Encoder]) -> dict[str, torch.Tensor]:
        """Unit-norm joint-space embeddings (B, projection_dim) of this rank's items, per bound modality."""
        absent = [m for m in self.bound if m not in batch]
        if absent:
            raise ConfigError(f"objective {type(self).registry_name!r} binds {self.bound} but the batch has no "
                              f"{absent} (it has {sorted(batch.data)}); use a dataset with every bound modality")
        out = {}
        for m in self.bound:
            x = batch[m]
            if m in self.augments:
                x = self.augments[m](x)
            out[m] = F.normalize(self.projections[m](encoders[m](x).pooled).float(), dim=-1)
        return out

    def pair_value(self, a: torch.Tensor, b: torch.Tensor, all_a: torch.Tensor, all_b: torch.Tensor, key: str,
                   offset: int) -> torch.Tensor:
        """This rank's share of the pair loss: local a, b (B, D) against gathered all_a, all_b (W·B, D)."""
        return clip_loss_local(a, b, all_a, all_b, self.log_scales[key].clamp(max=math.log(100)).exp(), offset)

    def forward(self, batch: Batch, encoders: Mapping[str, Encoder]) -> ObjectiveOutput:
        z = self.embed(batch, encoders)
        gathered = {m: gather(v) for m, v in z.items()}  # (W·B, D) with gradients, once per modality
        losses, metrics = [], {}
        local = len(next(iter(z.values())))
        offset = rank() * local
        target = torch.arange(local, device=batch[self.bound[0]].device) + offset
        for a, b in self.pairs:
            key = _key(a, b)
            loss = self.pair_value(z[a], z[b], gathered[a], gathered[b], key, offset)
            losses.append(loss)
            with torch.no_grad():  # retrieval of this rank's rows among the whole (gathered) batch
                a_to_b, b_to_a = (z[a] @ gathered[b].T).argmax(1), (z[b] @ gathered[a].T).argmax(1)
                metrics[f"{key}/loss"] = loss.item()
                metrics[f"{key}/top1"] = 0.5 * ((a_to_b == target).float().mean()
                                                + (b_to_a == target).float().mean()).item()
                if batch.labels is not None and len(batch.labels) == local:  # class-paired data: a twin counts
                    y, all_y = batch.labels, gather(batch.labels.double()).long()
                    metrics[f"{key}/class_top1"] = 0.5 * ((all_y[a_to_b] == y).float().mean()
                                                          + (all_y[b_to_a] == y).float().mean()).item()
                metrics[f"{key}/temperature"] = math.exp(-min(self.log_scales[key].item(), math.log(100)))
        return ObjectiveOutput(torch.stack(losses).mean(), metrics)


def _key(a: str, b: str) -> str:
    return f"{a}_{b}"


@OBJECTIVES.register("clip", modalities=("image", "audio", "text", "obs"))
class CLIP(_Binding):
    """CLIP: symmetric cross-modal InfoNCE between two modalities with a learnable temperature (Radford et al. 2021).

    ``L = ½ [CE(a bᵀ/τ, I) + CE(b aᵀ/τ, I)]`` on L2-normalised projections a = g_A(f_A(x_A)),
    b = g_B(f_B(x_B)), each (B, projection_dim); ``log 1/τ`` is learned and clamped at log 100.
    """

    def __init__(self, encoders: Mapping[str, Encoder], modalities: list[str] | None = None,
                 projection_dim: int = 128, hidden_dim: int = 256, projection_layers: int = 2,
                 temperature: float = 0.07, learn_temperature: bool = True, augment: bool = False,
                 augment_kwargs: dict | None = None):
        mods = list(modalities) if modalities is not None else [m for m in encoders if m in self.modalities][:2]
        if len(mods) != 2:
            raise ConfigError(f"objective {type(self).registry_name!r} binds exactly two modalities, got {mods}; "
                              "use objective=bind for three or more")
        super().__init__(encoders, mods, projection_dim, hidden_dim, projection_layers, temperature,
                         learn_temperature, augment, augment_kwargs)


@OBJECTIVES.register("siglip", modalities=("image", "audio", "text", "obs"))
class SigLIP(CLIP):
    """SigLIP: pairwise sigmoid loss between two modalities with learnable scale and bias (Zhai et al. 2023).

    ``L = -(1/B) Σ_ij log σ(z_ij (a_i·b_j / τ + t))``, z = +1 on matched pairs and −1 elsewhere, on
    L2-normalised projections (B, projection_dim); τ starts at ``temperature`` (paper: 0.1, i.e. scale
    10) and the bias t at ``bias`` (paper: −10), both learned.
    """

    def __init__(self, encoders: Mapping[str, Encoder], modalities: list[str] | None = None,
                 projection_dim: int = 128, hidden_dim: int = 256, projection_layers: int = 2,
                 temperature: float = 0.1, learn_temperature: bool = True, bias: float = -10.0,
                 augment: bool = False, augment_kwargs: dict | None = None):
        super().__init__(encoders, modalities, projection_dim, hidden_dim, projection_layers, temperature,
                         learn_temperature, augment, augment_kwargs)
        self.biases = nn.ParameterDict({_key(a, b): nn.Parameter(torch.tensor(float(bias))) for a, b in self.pairs})

    def pair_value(self, a: torch.Tensor, b: torch.Tensor, all_a: torch.Tensor, all_b: torch.Tensor, key: str,
                   offset: int) -> torch.Tensor:
        return siglip_loss_local(a, all_b, self.log_scales[key].clamp(max=math.log(100)).exp(), self.biases[key], offset)


@OBJECTIVES.register("bind", modalities=("image", "audio", "text", "obs"))
class Bind(_Binding):
    """Bind N ≥ 2 modalities in one joint space: CLIP loss over every pair, or towards an ``anchor`` (ImageBind).

    ``L = mean over pairs (A, B) of ½ [CE(a bᵀ/τ_AB, I) + CE(b aᵀ/τ_AB, I)]``, pairs = all C(N, 2)
    combinations, or (anchor, M) for every other M when ``anchor`` is set (Girdhar et al. 2023: image
    as the anchor binds audio to text without audio-text pairs). One learned τ per pair; projections
    (B, projection_dim) are L2-normalised.
    """

    def __init__(self, encoders: Mapping[str, Encoder], modalities: list[str] | None = None, anchor: str | None = None,
                 projection_dim: int = 128, hidden_dim: int = 256, projection_layers: int = 2,
                 temperature: float = 0.07, learn_temperature: bool = True, augment: bool = False,
                 augment_kwargs: dict | None = None, pair_loss: Literal["clip", "siglip"] = "clip"):
        if pair_loss not in ("clip", "siglip"):
            raise ConfigError(f"objective 'bind' pair_loss must be 'clip' or 'siglip', got {pair_loss!r}")
        super().__init__(encoders, modalities, projection_dim, hidden_dim, projection_layers, temperature,
                         learn_temperature, augment, augment_kwargs, anchor)
        self.pair_loss, self.anchor = pair_loss, anchor
        self.biases = nn.ParameterDict(
            {_key(a, b): nn.Parameter(torch.tensor(-10.0)) for a, b in self.pairs} if pair_loss == "siglip" else {})

    def make_pairs(self, mods: list[str], anchor: str | None) -> list[tuple[str, str]]:
        if anchor is None:
            return list(itertools.combinations(mods, 2))
        if anchor not in mods:
            raise ConfigError(f"objective 'bind' anchor {anchor!r} is not one of the bound modalities {mods}")
        return [(anchor, m) for m in mods if m != anchor]

    def pair_value(self, a: torch.Tensor, b: torch.Tensor, all_a: torch.Tensor, all_b: torch.Tensor, key: str,
                   offset: int) -> torch.Tensor:
        scale = self.log_scales[key].clamp(max=math.log(100)).exp()
        if self.pair_loss == "siglip":
            return siglip_loss_local(a, all_b, scale, self.biases[key], offset)
        return clip_loss_local(a, b, all_a, all_b, scale, offset)
