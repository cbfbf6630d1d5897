"""Clustering objectives: predict a view's cluster code from other views (SwAV) or its k-means label (DeepCluster-v2).

Both follow the official ``facebookresearch/swav`` code (``main_swav.py``, ``main_deepclusterv2.py``):
projector (Linear-BN-ReLU-Linear) → L2-normalised embedding (N, P) → cosine scores against unit
prototypes (K, P), multi-crop views from the augmentation (``multi_crop``), codes computed on the
two global views ("crops_for_assign" = [0, 1]) and predicted from every other view.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mmssl.collectives import gather, rank
from mmssl.encoders.base import Encoder
from mmssl.encoders.heads import mlp
from mmssl.errors import ConfigError
from mmssl.objectives.base import Objective
from mmssl.objectives.contrastive import float32
from mmssl.objectives.views import build_multi_crop_augment, encode_views, make_views
from mmssl.registry import OBJECTIVES
from mmssl.types import Batch, ObjectiveOutput

MODALITIES = ("image", "audio", "text", "obs")


class _MultiCropEmbeddings(Objective):
    """Views (2 global + local crops) → encoder → projector → unit embeddings (V·B, P)."""

    def __init__(self, encoders, modality, projection_dim, hidden_dim, temperature, augment, augment_kwargs, multi_crop):
        super().__init__(encoders, modality)
        if temperature <= 0:
            raise ConfigError(f"{self.registry_name} temperature must be positive, got {temperature}")
        self.temperature = temperature
        self.projector = mlp(encoders[self.modality].dim, hidden_dim, projection_dim, 2)
        self.augment = build_multi_crop_augment(self, augment, augment_kwargs, multi_crop)

    def embed(self, batch: Batch, encoders: Mapping[str, Encoder]) -> tuple[torch.Tensor, int, int]:
        """(unit embeddings (V·B, P) in view order, V, B)."""
        x = self.inputs(batch)
        views = make_views(self.augment, x, 2)
        z = F.normalize(self.projector(encode_views(encoders[self.modality], views)).float(), dim=1)
        return z, len(views), len(x)


# -- SwAV -----------------------------------------------------------------------------------------
@float32
def cosine_scores(z: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """(N, P) unit embeddings · (K, P) unit prototypes → (N, K) in float32 (bf16 would blur exp(s/ε) in Sinkhorn)."""
    return z @ prototypes.T


@torch.no_grad()
def sinkhorn(scores: torch.Tensor, epsilon: float, iterations: int) -> torch.Tensor:
    """Sinkhorn-Knopp codes (N, K) for scores (N, K): rows sum to 1, columns to N/K after the last row step.

    ``Q = exp(scores/ε)ᵀ`` normalised to sum 1, then ``iterations`` × (rows of Q (prototypes) to 1/K,
    columns (samples) to 1/N), then columns scaled to 1 (SwAV, Caron et al. 2020, eq. 3 solved as in
    ``distributed_sinkhorn``). The maximum is subtracted before ``exp``: a constant factor that the
    first normalisation removes, so the codes are the official ones without overflow at small ε.
    """
    q = torch.exp((scores.float() - scores.max()) / epsilon).T  # (K, N)
    q /= q.sum()
    k, n = q.shape
    for _ in range(iterations):
        q /= q.sum(dim=1, keepdim=True)
        q /= k
        q /= q.sum(dim=0, keepdim=True)
        q /= n
    q *= n
    return q.T


@float32
def swav_loss(scores: torch.Tensor, codes: torch.Tensor, temperature: float) -> torch.Tensor:
    """Swapped prediction: ``mean_i mean_{v≠i} mean_b -Σ_k q_i[b,k]·log softmax(s_v[b]/τ)_k``.

    ``scores`` (V, B, K) prototype scores of every view, ``codes`` (G, B, K) codes of the first G views.
    """
    g, v = codes.shape[0], scores.shape[0]
    log_p = F.log_softmax(scores / temperature, dim=-1)
    cross = -torch.einsum("gbk,vbk->gv", codes, log_p) / scores.shape[1]
    keep = ~torch.eye(g, v, dtype=torch.bool, device=scores.device)
    return cross[keep].view(g, v - 1).mean(1).mean()


@OBJECTIVES.register("swav", modalities=MODALITIES)
class SwAV(_MultiCropEmbeddings):
    """SwAV: swapped prediction of online Sinkhorn-Knopp cluster codes over prototypes (Caron et al. 2020).

    Embeddings ``z`` (unit, P) score ``s = z·Cᵀ`` against K unit prototypes C. Codes ``q`` of each global
    view come from ``sinkhorn(s, ε, iterations)`` over the global batch (gathered over ranks; the official
    code all-reduces the same sums), with the queue's stored embeddings prepended when it is full; the
    loss is ``swav_loss(s, q, τ)`` — every other view predicts them. The prototypes are re-normalised
    after every step and get no gradient for ``freeze_prototypes_steps`` steps. The optional queue
    (``queue_length`` > 0) keeps the last global views' embeddings (the official code uses it from epoch
    ``epoch_queue_starts``; here from step ``queue_start_step``); it holds the gathered embeddings of
    every rank, where the official queue is per rank, which gives the same Sinkhorn problem. Queue, its
    fill count and the step counter are buffers, so a resumed run continues exactly. Defaults are
    ``main_swav.py``'s (K 3000, τ 0.1, ε 0.05, 3 iterations, 313 frozen iterations).
    """

    def __init__(self, encoders: Mapping[str, Encoder], modality: str | None = None, projection_dim: int = 128,
                 hidden_dim: int = 2048, n_prototypes: int = 3000, temperature: float = 0.1, epsilon: float = 0.05,
                 sinkhorn_iterations: int = 3, queue_length: int = 0, queue_start_step: int = 0,
                 freeze_prototypes_steps: int = 313, augment: str | None = None, augment_kwargs: dict | None = None,
                 multi_crop: dict | None = None):
        super().__init__(encoders, modality, projection_dim, hidden_dim, temperature, augment, augment_kwargs,
                         multi_crop)
        if n_prototypes < 1 or epsilon <= 0 or sinkhorn_iterations < 1:
            raise ConfigError(f"swav needs n_prototypes ≥ 1, epsilon > 0 and sinkhorn_iterations ≥ 1; got "
                              f"{n_prototypes}, {epsilon}, {sinkhorn_iterations}")
        if queue_length < 0 or queue_start_step < 0 or freeze_prototypes_steps < 0:
            raise ConfigError("swav queue_length, queue_start_step and freeze_prototypes_steps must be ≥ 0")
        self.epsilon, self.sinkhorn_iterations = epsilon, sinkhorn_iterations
        self.queue_start_step, self.freeze_prototypes_steps = queue_start_step, freeze_prototypes_steps
        self.prototypes = nn.Linear(projection_dim, n_prototypes, bias=False)
        with torch.no_grad():
            self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))
        self.register_buffer("queue", torch.zeros(2, queue_length, projection_dim))
        self.register_buffer("queue_filled", torch.zeros((), dtype=torch.long))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self._pending: torch.Tensor | None = None

    def forward(self, batch: Batch, encoders: Mapping[str, Encoder]) -> ObjectiveOutput:
        z, v, b = self.embed(batch, encoders)
        weight = self.prototypes.weight
        if int(self.step) < self.freeze_prototypes_steps:
            weight = weight.detach()  # = the official "cancel gradients for the prototypes"
        scores = cosine_scores(z, weight)  # (V·B, K)
        use_queue = self.queue.shape[1] > 0 and int(self.queue_filled) >= self.queue.shape[1]
        codes = []
        with torch.no_grad():
            for i in range(2):
                out = gather(scores[i * b:(i + 1) * b].detach())  # (W·B, K)
                if use_queue:
                    out = torch.cat([cosine_scores(self.queue[i], weight.detach()), out])
                global_b = len(out) - (self.queue.shape[1] if use_queue else 0)
                q = sinkhorn(out, self.epsilon, self.sinkhorn_iterations)[-global_b:]  # the global batch's codes
                codes.append(q[rank() * b:(rank() + 1) * b])
        codes = torch.stack(codes)
        loss = swav_loss(scores.view(v, b, -1), codes, self.temperature)
        if self.training and self.queue.shape[1] > 0:
            self._pending = torch.stack([gather(z[:b].detach()), gather(z[b:2 * b].detach())])
        used = codes.argmax(-1).unique().numel() / weight.shape[0]
        return ObjectiveOutput(loss, {"prototypes_used": used, "queue_in_use": float(use_queue)})

    @torch.no_grad()
    def enqueue(self, embeddings: torch.Tensor) -> None:
        """Put ``embeddings`` (2, N, P) at the front of the queue, dropping its oldest rows (the official shift)."""
        length = self.queue.shape[1]
        self.queue.copy_(torch.cat([embeddings.to(self.queue), self.queue], dim=1)[:, :length])
        self.queue_filled.copy_((self.queue_filled + embeddings.shape[1]).clamp(max=length))

    def after_step(self, encoders: Mapping[str, Encoder], progress: float) -> None:
        with torch.no_grad():
            self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))
        if self._pending is not None:
            if int(self.step) >= self.queue_start_step:
                self.enqueue(self._pending)
            self._pending = None
        self.step += 1


# -- DeepCluster-v2 -------------------------------------------------------------------------------
@torch.no_grad()
@float32
def spherical_kmeans(x: torch.Tensor, k: int, iterations: int,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means on unit vectors x (N, P) by cosine, as DeepCluster-v2's ``cluster_memory``: (centroids (k, P), labels (N,)).

    Init: k distinct random rows; then ``iterations`` × (assign to the highest dot product; centroid ←
    normalised mean of its members, an empty cluster keeps its centroid) and a final assignment.
    (scikit-learn's KMeans is Euclidean with k-means++ init, not this spherical variant.)
    """
    n = x.shape[0]
    if n < k:
        raise ConfigError(f"deepcluster_v2 needs at least {k} embeddings in its memory bank to make {k} clusters, "
                          f"it has {n}; lower n_prototypes or raise data.batch_size/memory_size")
    centroids = x[torch.randperm(n, generator=generator)[:k].to(x.device)].clone()
    for it in range(iterations + 1):
        labels = (x @ centroids.T).argmax(dim=1)
        if it == iterations:
            break
        sums = torch.zeros_like(centroids).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=k)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled].unsqueeze(1).to(x.dtype)
        centroids = F.normalize(centroids, dim=1)
    return centroids, labels


def lookup_assignments(assigned_index: torch.Tensor, assignments: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Cluster labels (H, B) of dataset indices ``index`` (B,) from the bank's (index (M,), labels (H, M)); -100 where absent."""
    valid = assigned_index >= 0
    size = int(max(int(assigned_index.max()), int(index.max()))) + 1
    table = torch.full((size,), -1, dtype=torch.long, device=index.device)
    table[assigned_index[valid]] = torch.nonzero(valid).squeeze(1)
    pos = table[index]
    labels = assignments[:, pos.clamp(min=0)]
    return torch.where(pos >= 0, labels, torch.full_like(labels, -100))


@OBJECTIVES.register("deepcluster_v2", modalities=MODALITIES)
class DeepClusterV2(_MultiCropEmbeddings):
    """DeepCluster-v2: predict each sample's k-means cluster of the previous epoch from every view (Caron et al. 2020).

    ``L = mean_h CE(z·C_hᵀ/τ, y_h[i])`` over all V views of sample i, where for each head h the
    prototypes C_h (K_h, P) are the spherical k-means centroids of the memory bank and y_h[i] the
    sample's label (``spherical_kmeans``, 10 iterations). Head h clusters the bank of global view
    h mod 2. The memory bank holds the unit embeddings of both global views and the dataset index of
    every sample seen this epoch (gathered over ranks, so every rank holds the whole bank and
    clusters identically); at the first batch of a new epoch it is clustered, the centroids become the
    prototypes and the bank starts afresh (an epoch number lower than the last, a restarted iterator, also
    re-clusters). Batches must carry ``extra["index"]`` and ``extra["epoch"]``
    (the trainer's iterator sets them). As in the official code the prototypes get no gradient (its
    ``freeze_prototypes_niters`` defaults to 1e10), so they are buffers here. The official code fills
    the bank with a pass over the data before epoch 0; here epoch 0 fills it from the training
    batches and its loss is 0 (``assigned_fraction`` = 0). Samples absent from the bank (a bank
    smaller than an epoch) get label -100 and are ignored, as in the official code. ``memory_size``
    must be at least the samples per epoch. k-means draws its initial centroids from a generator
    seeded by (``seed``, epoch), so every rank and a resumed run cluster identically. Bank,
    assignments, prototypes and the epoch are buffers, so a resumed run continues exactly. Defaults
    are ``main_deepclusterv2.py``'s (3 heads × 3000 prototypes, τ 0.1, P 128).
    """

    def __init__(self, encoders: Mapping[str, Encoder], modality: str | None = None, projection_dim: int = 128,
                 hidden_dim: int = 2048, n_prototypes: Sequence[int] = (3000, 3000, 3000), temperature: float = 0.1,
                 memory_size: int = 4096, kmeans_iterations: int = 10, seed: int = 0, augment: str | None = None,
                 augment_kwargs: dict | None = None, multi_crop: dict | None = None):
        super().__init__(encoders, modality, projection_dim, hidden_dim, temperature, augment, augment_kwargs,
                         multi_crop)
        n_prototypes = [int(k) for k in n_prototypes]
        if not n_prototypes or min(n_prototypes) < 1:
            raise ConfigError(f"deepcluster_v2 n_prototypes must be a non-empty list of positive sizes, got {n_prototypes}")
        if memory_size < max(n_prototypes):
            raise ConfigError(f"deepcluster_v2 memory_size={memory_size} is smaller than n_prototypes={max(n_prototypes)}")
        if kmeans_iterations < 1:
            raise ConfigError(f"deepcluster_v2 kmeans_iterations must be ≥ 1, got {kmeans_iterations}")
        self.n_prototypes, self.kmeans_iterations, self.seed = n_prototypes, kmeans_iterations, seed
        for h, k in enumerate(n_prototypes):
            self.register_buffer(f"prototypes{h}", F.normalize(torch.randn(k, projection_dim), dim=1))
        self.register_buffer("bank", torch.zeros(2, memory_size, projection_dim))
        self.register_buffer("bank_index", torch.full((memory_size,), -1, dtype=torch.long))
        self.register_buffer("bank_ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("assignments", torch.full((len(n_prototypes), memory_size), -100, dtype=torch.long))
        self.register_buffer("assigned_index", torch.full((memory_size,), -1, dtype=torch.long))
        self.register_buffer("epoch", torch.full((), -1, dtype=torch.long))
        self._pending: tuple[torch.Tensor, torch.Tensor] | None = None
        self._warned = False

    def prototypes(self, h: int) -> torch.Tensor:
        return getattr(self, f"prototypes{h}")

    def sample_ids(self, batch: Batch) -> tuple[torch.Tensor, int]:
        if "index" not in batch.extra or "epoch" not in batch.extra:
            raise ConfigError("deepcluster_v2 needs dataset indices and epochs in the batch (extra['index'], "
                              "extra['epoch'], set by mmssl.data.BatchIterator); it cannot run on RL rollouts")
        return batch.extra["index"].long(), int(batch.extra["epoch"].max())

    @torch.no_grad()
    def recluster(self, epoch: int) -> None:
        """Cluster the bank (if it holds anything), make the centroids the prototypes, and empty the bank."""
        valid = self.bank_index >= 0
        if valid.any():
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            for h, k in enumerate(self.n_prototypes):
                centroids, labels = spherical_kmeans(self.bank[h % 2][valid], k, self.kmeans_iterations, generator)
                self.prototypes(h).copy_(centroids)
                self.assignments[h].fill_(-100)
                self.assignments[h, : len(labels)] = labels
            self.assigned_index.fill_(-1)
            self.assigned_index[: int(valid.sum())] = self.bank_index[valid]
        self.bank_index.fill_(-1)
        self.bank_ptr.zero_()
        self.epoch.fill_(epoch)

    def forward(self, batch: Batch, encoders: Mapping[str, Encoder]) -> ObjectiveOutput:
        index, epoch = self.sample_ids(batch)
        if self.training and epoch != int(self.epoch):  # a new epoch (or a new iterator starting again at 0)
            self.recluster(epoch)
        z, v, b = self.embed(batch, encoders)
        targets = lookup_assignments(self.assigned_index, self.assignments, index.to(z.device))  # (H, B)
        loss = deepcluster_loss(z, [self.prototypes(h) for h in range(len(self.n_prototypes))], targets.repeat(1, v),
                                self.temperature)
        if self.training:
            self._pending = (gather(index.to(z.device)), torch.stack([gather(z[:b].detach()), gather(z[b:2 * b].detach())]))
        return ObjectiveOutput(loss, {"assigned_fraction": (targets[0] >= 0).float().mean().item(),
                                      "clustered_epoch": float(self.epoch)})

    @torch.no_grad()
    def remember(self, index: torch.Tensor, embeddings: torch.Tensor) -> None:
        """Write dataset indices (N,) and global-view embeddings (2, N, P) at the bank pointer (ring buffer)."""
        m = self.bank.shape[1]
        if int(self.bank_index[-1]) >= 0 or int(self.bank_ptr) + len(index) > m:
            if not self._warned:  # the ring wraps within an epoch: its oldest samples go unassigned
                warnings.warn(f"deepcluster_v2: an epoch visits more than memory_size={m} items, so the oldest "
                              "leave the bank and get no cluster label next epoch; set "
                              "objective.deepcluster_v2.memory_size to at least the training set size", stacklevel=2)
                self._warned = True
        index, embeddings = index[-m:], embeddings[:, -m:]
        slots = (self.bank_ptr + torch.arange(len(index), device=index.device)) % m
        self.bank_index[slots] = index
        self.bank[:, slots] = embeddings.to(self.bank)
        self.bank_ptr.copy_((self.bank_ptr + len(index)) % m)

    def after_step(self, encoders: Mapping[str, Encoder], progress: float) -> None:
        if self._pending is not None:
            self.remember(*self._pending)
            self._pending = None


@float32
def deepcluster_loss(z: torch.Tensor, prototypes: list[torch.Tensor], targets: torch.Tensor,
                     temperature: float) -> torch.Tensor:
    """``mean_h CE(z·C_hᵀ/τ, targets_h)`` for unit z (N, P), prototypes C_h (K_h, P), targets (H, N) (-100 ignored).

    A batch with no assigned sample (the first epoch) gives a zero loss connected to the graph.
    """
    if not (targets >= 0).any():
        return z.sum() * 0.0 + 0.0  # + 0.0: no "-0.0" in the logs
    losses = [F.cross_entropy(z @ c.T / temperature, t, ignore_index=-100) for c, t in zip(prototypes, targets)]
    return torch.stack(losses).mean()
