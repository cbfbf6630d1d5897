"""Contrastive objectives: positives pulled together, in-batch (or queued) negatives pushed apart."""

from __future__ import annotations

import functools
from collections.abc import Mapping

import torch
import torch.nn.functional as F

from mmssl.collectives import gather, rank
from mmssl.encoders.base import Encoder
from mmssl.encoders.heads import mlp
from mmssl.errors import ConfigError
from mmssl.objectives.base import Objective, cosine_momentum, ema_update
from mmssl.registry import OBJECTIVES
from mmssl.types import Batch, ObjectiveOutput


def float32(fn):
    """Run a loss in float32 with autocast off: similarity and correlation matrices, logsumexp and sums of
    squares lose too much in bf16 (their entries differ by less than bf16's resolution)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        device = next((a.device.type for a in args if torch.is_tensor(a)), "cpu")
        args = [a.float() if torch.is_tensor(a) and a.is_floating_point() else a for a in args]
        with torch.autocast(device, enabled=False):
            return fn(*args, **kwargs)

    return wrapper


def _two_view_logits(z1: torch.Tensor, z2: torch.Tensor, temperature: float):
    """Cosine logits of this rank's 2B views against all 2WB gathered views, with self and positive indices."""
    z1, z2 = F.normalize(z1.float(), dim=1), F.normalize(z2.float(), dim=1)
    b = z1.shape[0]
    queries = torch.cat([z1, z2])  # (2B, D)
    k1, k2 = gather(z1), gather(z2)
    keys = torch.cat([k1, k2])  # (2WB, D)
    n = k1.shape[0]
    logits = queries @ keys.T / temperature
    idx = torch.arange(b, device=z1.device) + rank() * b
    return logits, torch.cat([idx, idx + n]), torch.cat([idx + n, idx])


@float32
def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """NT-Xent (SimCLR, Chen et al. 2020) over two views (B, D) each; returns (loss, positive top-1 accuracy).

    With unit vectors ``z`` over the 2B views and ``s_ij = z_i·z_j / τ``, the loss for view i with
    positive p(i) is ``-log( exp(s_i,p(i)) / Σ_{k≠i} exp(s_ik) )``, averaged over all 2B views.
    Under torch.distributed the keys are gathered from every rank (with gradients) and each rank's
    queries use their own global offset, so the loss equals the single-process loss on the global batch.
    """
    logits, self_idx, pos_idx = _two_view_logits(z1, z2, temperature)
    rows = torch.arange(len(logits), device=logits.device)
    logits[rows, self_idx] = float("-inf")
    loss = F.cross_entropy(logits, pos_idx)
    accuracy = (logits.argmax(dim=1) == pos_idx).float().mean()
    return loss, accuracy


@float32
def decoupled_nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoupled contrastive loss (DCL, Yeh et al. 2022): NT-Xent with the positive removed from the denominator.

    ``L_i = -s_i,p(i) + log Σ_{k∉{i, p(i)}} exp(s_ik)`` with ``s = cos/τ`` over the 2B views (B, D) each;
    removing the positive decouples the positive and negative gradients, so small batches train well.
    Gathered across ranks like ``nt_xent``. Returns (loss, positive top-1 accuracy).
    """
    logits, self_idx, pos_idx = _two_view_logits(z1, z2, temperature)
    rows = torch.arange(len(logits), device=logits.device)
    positive = logits[rows, pos_idx]
    accuracy = (logits.masked_fill(F.one_hot(self_idx, logits.shape[1]).bool(), float("-inf")).argmax(1) == pos_idx)
    excluded = F.one_hot(self_idx, logits.shape[1]).bool() | F.one_hot(pos_idx, logits.shape[1]).bool()
    loss = (torch.logsumexp(logits.masked_fill(excluded, float("-inf")), dim=1) - positive).mean()
    return loss, accuracy.float().mean()


@float32
def info_nce(queries: torch.Tensor, keys: torch.Tensor, temperature: float,
             negatives: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """InfoNCE (van den Oord et al. 2018) of queries (B, D) against keys (B, D) gathered over ranks.

    The positive of query i is key i; the other keys of the global batch (and the rows of
    ``negatives`` (K, D), e.g. MoCo's queue) are negatives: ``-log exp(q·k⁺/τ) / Σ_k exp(q·k/τ)`` on
    L2-normalised vectors. Returns (mean loss over this rank's queries, top-1 accuracy).
    """
    q, k = F.normalize(queries.float(), dim=1), F.normalize(gather(keys.float()), dim=1)
    logits = q @ k.T
    if negatives is not None:
        logits = torch.cat([logits, q @ F.normalize(negatives.float(), dim=1).T], dim=1)
    logits = logits / temperature
    target = torch.arange(len(q), device=q.device) + rank() * len(q)
    return F.cross_entropy(logits, target), (logits.argmax(1) == target).float().mean()


@torch.no_grad()
def ring_write(queue: torch.Tensor, ptr: torch.Tensor, rows: torch.Tensor) -> int:
    """Overwrite the oldest rows of the ring buffer ``queue`` (K, P) with ``rows`` (N, P) from position
    ``ptr`` (a 0-d tensor, advanced in place), wrapping around; keeps the last K rows if N > K.
    Returns how many rows were written (min(N, K)). MoCo's negatives queue, NNCLR's support set."""
    rows = rows[-len(queue):]
    idx = (ptr + torch.arange(len(rows), device=rows.device)) % len(queue)
    queue[idx] = rows.to(queue.dtype)
    ptr.copy_((ptr + len(rows)) % len(queue))
    return len(rows)


@OBJECTIVES.register("simclr", modalities=("image", "audio", "text", "obs"))
class SimCLR(Objective):
    """SimCLR: NT-Xent/InfoNCE between two augmented views through an MLP projector (Chen et al. 2020).

    See ``nt_xent``: the mean over all 2B views, as the paper's Algorithm 1 and lightly's ``NTXentLoss``.
    The official TF code (google-research/simclr ``objective.py``) returns ``loss_a + loss_b``, the sum
    of the two directions' means, i.e. exactly 2× this value; the gradient direction and the meaning of
    τ are the same (LARS and Adam are nearly invariant to a constant loss scale, plain SGD is not: double
    the lr to match). Official τ: 0.5 on CIFAR-10, 0.1 on ImageNet with large batches.
    """

    def __init__(self, encoders: Mapping[str, Encoder], modality: str | None = None, temperature: float = 0.2,
                 projection_dim: int = 128, hidden_dim: int = 512, projection_layers: int = 2,
                 augment: str | None = None, augment_kwargs: dict | None = None):
        super().__init__(encoders, modality)
        if temperature <= 0:
            raise ValueError(f"simclr temperature must be positive, got {temperature}")
        self.temperature = temperature
        self.projector = mlp(encoders[self.modality].dim, hidden_dim, projection_dim, projection_layers)
        self.augment = self.build_augment(augment, augment_kwargs)

    def forward(self, batch: Batch, encoders: Mapping[str, Encoder]) -> ObjectiveOutput:
        x = self.inputs(batch)
        encoder = encoders[self.modality]
        views = torch.cat([self.augment(x), self.augment(x)])
        z1, z2 = self.projector(encoder(views).pooled).chunk(2)
        loss, accuracy = nt_xent(z1, z2, self.temperature)
        return ObjectiveOutput(loss, {"positive_accuracy": accuracy.item()})


@OBJECTIVES.register("dcl", modalities=("image", "audio", "text", "obs"))
class DCL(SimCLR):
    """DCL: SimCLR with the positive pair removed from the InfoNCE denominator (Yeh et al. 2022).

    ``L_i = -s_i,p(i) + log Σ_{k∉{i, p(i)}} exp(s_ik)``, ``s = cos(z_i, z_k)/τ`` over 2B projected views,
    averaged over all 2B views, as lightly's ``DCLLoss`` (½ of the two directions' means); the recipes use
    lightly's default τ = 0.1.
    """

    def forward(self, batch: Batch, encoders: Mapping[str, Encoder]) -> ObjectiveOutput:
        x = self.inputs(batch)
        views = torch.cat([self.augment(x), self.augment(x)])
        z1, z2 = self.projector(encoders[self.modality](views).pooled).chunk(2)
        loss, accuracy = decoupled_nt_xent(z1, z2, self.temperature)
        return ObjectiveOutput(loss, {"positive_accuracy": accuracy.item()})


class _Momentum(Objective):
    """Shared MoCo parts: online projector, frozen momentum copies of encoder and projector, view pairs."""

    def __init__(self, encoders, modality, temperature, projector, momentum, augment, augment_kwargs):
        super().__init__(encoders, modality)
        name = type(self).registry_name
        if temperature <= 0:
            raise ConfigError(f"{name} temperature must be positive, got {temperature}")
        if not 0.0 <= momentum <= 1.0:
            raise ConfigError(f"{name} momentum must be in [0, 1], got {momentum}")
        self.temperature, self.base_momentum, self.momentum = temperature, momentum, momentum
        self.projector = projector
        self.target_encoder = self.momentum_copy(encoders[self.modality])
        self.target_projector = self.momentum_copy(projector)
        self.augment = self.build_augment(augment, augment_kwargs)

    def project_views(self, batch: Batch, encoders: Mapping[str, Encoder]):
        """Online projections (2B, P) with gradients and momentum keys (2B, P) without, for two fresh views."""
        x = self.inputs(batch)
        views = torch.cat([self.augment(x), self.augment(x)])
        online = self.projector(encoders[self.modality](views).pooled)
        with torch.no_grad():
            keys = self.target_projector(self.target_encoder(views).pooled)
        return online, keys

    def momentum_update(self, encoders: Mapping[str, Encoder]) -> None:
        ema_update(self.target_encoder, encoders[self.modality], self.momentum)
        ema_update(self.target_projector, self.projector, self.momentum)


@OBJECTIVES.register("moco_v2", modalities=("image", "audio", "text", "obs"))
class MoCoV2(_Momentum):
    """MoCo v2: a query against its momentum key and a queue of past keys (He et al. 2020; Chen et al. 2020b).

    ``L = -log exp(q·k⁺/τ) / (exp(q·k⁺/τ) + Σ_{k⁻∈queue} exp(q·k⁻/τ))`` on unit vectors, with queries from
    the first view and keys from the second, as in the official code (facebookresearch/moco
    ``builder.py``: one direction per step, the keys of ``im_k`` enqueued); ``symmetric=True`` averages
    both directions (twice the forward work, the same expected loss). The key network
    ``ξ ← m·ξ + (1-m)·θ`` (fixed m). After each step the (gathered) keys of the second view replace the
    oldest of ``queue_size`` entries. The queue (K, P) and its pointer are registered buffers, so
    checkpoints hold them and a resumed run continues exactly. The projector is v2's MLP without
    BatchNorm; shuffled BN is not needed when BN statistics are per rank and per view. Official
    ImageNet settings: τ = 0.2, K = 65536, m = 0.999 (the defaults here are sized for small data).
    """

    def __init__(self, encoders: Mapping[str, Encoder], modality: str | None = None, temperature: float = 0.2,
                 projection_dim: int = 128, hidden_dim: int = 512, queue_size: int = 4096, momentum: float = 0.99,
                 symmetric: bool = False, augment: str | None = None, augment_kwargs: dict | None = None):
        if queue_size < 1:
            raise ConfigError(f"moco_v2 queue_size must be ≥ 1, got {queue_size}")
        super().__init__(encoders, modality, temperature,
                         mlp(encoders[self.resolve_modality(encoders, modality)].dim, hidden_dim, projection_dim,
                             2, batch_norm=False),
                         momentum, augment, augment_kwargs)
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, projection_dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self._pending: torch.Tensor | None = None
        self.symmetric = symmetric

    def forward(self, batch: Batch, encoders: Mapping[str, Encoder]) -> ObjectiveOutput:
        online, keys = self.project_views(batch, encoders)
        q1, q2 = F.normalize(online.float(), dim=1).chunk(2)
        k1, k2 = F.normalize(keys.float(), dim=1).chunk(2)
        queue = self.queue.clone()  # a snapshot: the queue changes only in after_step
        loss, acc = moco_loss(q1, k2, queue, self.temperature)
        if self.symmetric:
            loss2, acc2 = moco_loss(q2, k1, queue, self.temperature)
            loss, acc = (loss + loss2) / 2, (acc + acc2) / 2
        if self.training:
            self._pending = gather(k2)  # every rank enqueues the same global keys
        return ObjectiveOutput(loss, {"positive_accuracy": acc.item(), "momentum": self.momentum})

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Overwrite the oldest queue rows with ``keys`` (N, P), wrapping around; keeps the last K if N > K."""
        ring_write(self.queue, self.queue_ptr, keys)

    def after_step(self, encoders: Mapping[str, Encoder], progress: float) -> None:
        self.momentum_update(encoders)
        if self._pending is not None:
            self.enqueue(self._pending)
            self._pending = None


@float32
def moco_loss(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float):
    """MoCo's InfoNCE: unit queries (B, P) vs their own key (B, P) and the queue (K, P); (loss, accuracy)."""
    positive = (q * k).sum(dim=1, keepdim=True)  # (B, 1)
    logits = torch.cat([positive, q @ queue.T], dim=1) / temperature
    target = torch.zeros(len(q), dtype=torch.long, device=q.device)
    return F.cross_entropy(logits, target), (logits.argmax(1) == 0).float().mean()


@OBJECTIVES.register("moco_v3", modalities=("image", "audio", "text", "obs"))
class MoCoV3(_Momentum):
    """MoCo v3: symmetric in-batch InfoNCE of predicted queries against momentum keys (Chen, Xie & He 2021).

    ``L = ctr(q₁, k₂) + ctr(q₂, k₁)``, ``ctr(q, k) = 2τ·CE(q·kᵀ/τ, diag)`` on unit vectors (B, P), keys
    gathered over ranks; no queue. Projector: 3-layer MLP with BN (last BN affine-free), predictor:
    2-layer MLP; the momentum rises from ``momentum`` to 1 on a cosine schedule. This is the official
    code's form (facebookresearch/moco-v3 ``builder.py``: ``CE(logits, labels)·2τ``, summed over the two
    directions); its defaults are τ = 1.0 for ResNets and τ = 0.2 for ViTs, m = 0.99.
    """

    def __init__(self, encoders: Mapping[str, Encoder], modality: str | None = None, temperature: float = 0.2,
                 projection_dim: int = 128, hidden_dim: int = 512, momentum: float = 0.99,
                 augment: str | None = None, augment_kwargs: dict | None = None):
        dim = encoders[self.resolve_modality(encoders, modality)].dim
        super().__init__(encoders, modality, temperature, mlp(dim, hidden_dim, projection_dim, 3, last_batch_norm=True),
                         momentum, augment, augment_kwargs)
        self.predictor = mlp(projection_dim, hidden_dim, projection_dim, 2)

    def forward(self, batch: Batch, encoders: Mapping[str, Encoder]) -> ObjectiveOutput:
        online, keys = self.project_views(batch, encoders)
        q1, q2 = self.predictor(online).chunk(2)
        k1, k2 = keys.chunk(2)
        loss1, acc1 = info_nce(q1, k2, self.temperature)
        loss2, acc2 = info_nce(q2, k1, self.temperature)
        loss = 2 * self.temperature * (loss1 + loss2)
        return ObjectiveOutput(loss, {"positive_accuracy": ((acc1 + acc2) / 2).item(), "momentum": self.momentum})

    def after_step(self, encoders: Mapping[str, Encoder], progress: float) -> None:
        self.momentum = cosine_momentum(self.base_momentum, progress)
        self.momentum_update(encoders)


@float32
def semi_hard_triplet_loss(queries: torch.Tensor, query_ids: torch.Tensor, keys: torch.Tensor, key_ids: torch.Tensor,
                           self_index: torch.Tensor, margin: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Triplet loss with semi-hard negatives (FaceNet, Schroff et al. 2015), batch-all over positive pairs.

    queries (Q, D) with ids (Q,), keys (K, D) with ids (K,), ``self_index`` (Q,) the key position of
    each query. For every anchor a and positive p (same id, p ≠ a) the negative is the closest n with
    ``d(a,n) > d(a,p)`` (semi-hard); when none exists, the farthest negative (TensorFlow's rule).
    ``L = mean_(a,p) max(0, d(a,p) - d(a,n) + margin)`` with Euclidean d (not squared: TensorFlow Addons'
    ``triplet_semihard_loss`` default metric; FaceNet prints its α = 0.2 for squared distances, TFA's default
    margin is 1.0 — the default 0.2 here is FaceNet's number on TFA's distance). Anchors without negatives
    are skipped. Returns (loss, fraction of pairs with non-zero loss).
    """
    sq = (queries.pow(2).sum(1, keepdim=True) + keys.pow(2).sum(1) - 2 * queries @ keys.T)
    dist = sq.clamp(min=1e-12).sqrt()  # clamp: duplicates give d = 0, whose sqrt has no gradient
    same = query_ids[:, None] == key_ids[None, :]
    positive = same.clone()
    positive[torch.arange(len(queries), device=queries.device), self_index] = False
    negative = ~same
    anchor, pos = (positive & negative.any(1, keepdim=True)).nonzero(as_tuple=True)
    if len(anchor) == 0:
        zero = dist.sum() * 0
        return zero, zero.detach()
    d_ap, d_an, neg = dist[anchor, pos], dist[anchor], negative[anchor]  # (P,), (P, K), (P, K)
    outside = neg & (d_an > d_ap[:, None])
    semi_hard = torch.where(outside, d_an, torch.full_like(d_an, float("inf"))).min(1).values
    easiest = torch.where(neg, d_an, torch.full_like(d_an, float("-inf"))).max(1).values
    chosen = torch.where(outside.any(1), semi_hard, easiest)
    losses = F.relu(d_ap - chosen + margin)
    return losses.mean(), (losses > 0).float().mean()


@OBJECTIVES.register("triplet", modalities=("image", "audio", "text", "obs"))
class Triplet(Objective):
    """Triplet loss with in-batch semi-hard mining over two views (Schroff et al. 2015).

    Two views of each sample are projected and L2-normalised (2B, P); identities are the batch labels
    when the batch has them (``use_labels``; the run is then supervised, logged as ``label_supervised``),
    else the sample index (the two views are the positives).
    Embeddings and identities are gathered over ranks. See ``semi_hard_triplet_loss`` for the formula.
    """

    def __init__(self, encoders: Mapping[str, Encoder], modality: str | None = None, margin: float = 0.2,
                 projection_dim: int = 128, hidden_dim: int = 512, use_labels: bool = True,
                 augment: str | None = None, augment_kwargs: dict | None = None):
        super().__init__(encoders, modality)
        if margin <= 0:
            raise ConfigError(f"triplet margin must be positive, got {margin}")
        self.margin, self.use_labels = margin, use_labels
        self.projector = mlp(encoders[self.modality].dim, hidden_dim, projection_dim)
        self.augment = self.build_augment(augment, augment_kwargs)

    def forward(self, batch: Batch, encoders: Mapping[str, Encoder]) -> ObjectiveOutput:
        x = self.inputs(batch)
        b = len(x)
        views = torch.cat([self.augment(x), self.augment(x)])
        z1, z2 = F.normalize(self.projector(encoders[self.modality](views).pooled).float(), dim=1).chunk(2)
        offset = rank() * b
        ids = batch.labels.long() if self.use_labels and batch.labels is not None else torch.arange(b) + offset
        ids = ids.to(z1.device)
        # ids are gathered as float64 (exact for integers below 2**53) through the differentiable gather
        all_ids = gather(ids.double()).long()
        keys, key_ids = torch.cat([gather(z1), gather(z2)]), torch.cat([all_ids, all_ids])
        idx = torch.arange(b, device=z1.device) + offset
        self_index = torch.cat([idx, idx + len(all_ids)])
        loss, active = semi_hard_triplet_loss(torch.cat([z1, z2]), torch.cat([ids, ids]), keys, key_ids,
                                              self_index, self.margin)
        # "label_supervised" = 1 when class labels defined the positives: the run is then not self-supervised
        supervised = float(self.use_labels and batch.labels is not None)
        return ObjectiveOutput(loss, {"active_triplets": active.item(), "label_supervised": supervised})
