"""NNCLR: nearest-neighbour contrastive learning (Dwibedi et al. 2021)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from mmssl.collectives import gather
from mmssl.encoders.base import Encoder
from mmssl.encoders.heads import mlp
from mmssl.errors import ConfigError
from mmssl.objectives.base import Objective
from mmssl.objectives.contrastive import float32, info_nce, ring_write
from mmssl.registry import OBJECTIVES
from mmssl.types import Batch, ObjectiveOutput


@torch.no_grad()
@float32
def nearest_neighbours(z: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """For unit z (B, P), the row of unit ``support`` (Q, P) with the highest cosine (= smallest L2 distance)."""
    return support[(z @ support.T).argmax(dim=1)]


@OBJECTIVES.register("nnclr", modalities=("image", "audio", "text", "obs"))
class NNCLR(Objective):
    """NNCLR: the positive of a view is its nearest neighbour in a support queue of past embeddings (Dwibedi et al. 2021).

    ``L_i = -log exp(NN(z₁ᵢ, Q)·p₂ᵢ/τ) / Σ_k exp(NN(z₁ᵢ, Q)·p₂ₖ/τ)`` (the paper's eq. 2 with its prediction
    head), symmetrised over the views, on unit vectors: z = projector(encoder(view)) (3-layer BN MLP),
    p = predictor(z) (2-layer MLP), NN(z, Q) = the support-set row of highest cosine (no gradient), and
    the denominator runs over the predictions of the global batch (gathered over ranks). After each
    step the (gathered) first-view embeddings replace the oldest of ``queue_size`` support rows. Until
    the first step has filled any row, the support set is the batch's own embeddings (NN(z) = z);
    unfilled rows are never neighbours. The queue, its pointer and fill count are buffers, so a
    resumed run continues exactly. Defaults are the paper's (τ 0.1, P 256, projector 2048, predictor
    4096, Q 98304); the authors released no code, so there is no official code to follow.
    """

    def __init__(self, encoders: Mapping[str, Encoder], modality: str | None = None, temperature: float = 0.1,
                 projection_dim: int = 256, hidden_dim: int = 2048, predictor_hidden_dim: int = 4096,
                 queue_size: int = 98304, augment: str | None = None, augment_kwargs: dict | None = None):
        super().__init__(encoders, modality)
        if temperature <= 0:
            raise ConfigError(f"nnclr temperature must be positive, got {temperature}")
        if queue_size < 1:
            raise ConfigError(f"nnclr queue_size must be ≥ 1, got {queue_size}")
        self.temperature = temperature
        self.projector = mlp(encoders[self.modality].dim, hidden_dim, projection_dim, 3, last_batch_norm=True)
        self.predictor = mlp(projection_dim, predictor_hidden_dim, projection_dim, 2)
        self.augment = self.build_augment(augment, augment_kwargs)
        self.register_buffer("queue", torch.zeros(queue_size, projection_dim))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("queue_filled", torch.zeros((), dtype=torch.long))
        self._pending: torch.Tensor | None = None

    def support(self, z: torch.Tensor) -> torch.Tensor:
        """The filled support rows (a snapshot), or the batch's own detached embeddings while the queue is empty."""
        filled = int(self.queue_filled)
        return self.queue[:filled].clone() if filled else z.detach()

    def forward(self, batch: Batch, encoders: Mapping[str, Encoder]) -> ObjectiveOutput:
        x = self.inputs(batch)
        views = torch.cat([self.augment(x), self.augment(x)])
        z = self.projector(encoders[self.modality](views).pooled)
        p1, p2 = self.predictor(z).chunk(2)
        z1, z2 = F.normalize(z.float(), dim=1).chunk(2)
        support = self.support(torch.cat([z1, z2]))
        nn1, nn2 = nearest_neighbours(z1, support), nearest_neighbours(z2, support)
        loss1, acc1 = info_nce(nn1, p2, self.temperature)
        loss2, acc2 = info_nce(nn2, p1, self.temperature)
        if self.training:
            self._pending = gather(z1.detach())
        similarity = ((nn1 * z1).sum(1).mean() + (nn2 * z2).sum(1).mean()) / 2
        return ObjectiveOutput((loss1 + loss2) / 2, {"positive_accuracy": ((acc1 + acc2) / 2).item(),
                                                     "nn_similarity": similarity.item()})

    @torch.no_grad()
    def enqueue(self, z: torch.Tensor) -> None:
        """Overwrite the oldest support rows with unit embeddings ``z`` (N, P), wrapping around."""
        written = ring_write(self.queue, self.queue_ptr, z)
        self.queue_filled.copy_((self.queue_filled + written).clamp(max=len(self.queue)))

    def after_step(self, encoders: Mapping[str, Encoder], progress: float) -> None:
        if self._pending is not None:
            self.enqueue(self._pending)
            self._pending = None
