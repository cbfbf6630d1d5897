"""Non-contrastive objectives: no negatives; collapse is avoided by asymmetry or by regularising statistics."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from mmssl.encoders.base import Encoder
from mmssl.encoders.heads import mlp
from mmssl.objectives.base import Objective, cosine_momentum, ema_update
from mmssl.registry import OBJECTIVES
from mmssl.types import Batch, ObjectiveOutput


def byol_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``2 - 2·cos(p, z)`` averaged over the batch (BYOL's normalised MSE); ``z`` is a detached target."""
    return (2 - 2 * F.cosine_similarity(p.float(), z.float(), dim=-1)).mean()


@OBJECTIVES.register("byol", modalities=("image", "audio", "text", "obs"))
class BYOL(Objective):
    """BYOL: an online predictor regresses an EMA target network's projection of another view (Grill et al. 2020).

    Loss (symmetrised over the two views): ``2 - 2·cos(q_θ(z_θ(v)), z_ξ(v'))`` with target weights
    ``ξ ← τ·ξ + (1-τ)·θ`` after every step and τ rising from ``momentum`` to 1 on a cosine schedule.
    """

    modalities = ("image", "audio", "text", "obs")

    def __init__(self, encoders: Mapping[str, Encoder], modality: str | None = None, projection_dim: int = 128,
                 hidden_dim: int = 512, momentum: float = 0.99, augment: str | None = None,
                 augment_kwargs: dict | None = None):
        super().__init__(encoders, modality)
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"byol momentum must be in [0, 1], got {momentum}")
        self.base_momentum = momentum
        self.momentum = momentum
        encoder = encoders[self.modality]
        self.projector = mlp(encoder.dim, hidden_dim, projection_dim)
        self.predictor = mlp(projection_dim, hidden_dim, projection_dim)
        self.target_encoder = self.momentum_copy(encoder)
        self.target_projector = self.momentum_copy(self.projector)
        self.augment = self.build_augment(augment, augment_kwargs)

    def forward(self, batch: Batch, encoders: Mapping[str, Encoder]) -> ObjectiveOutput:
        x = self.inputs(batch)
        views = torch.cat([self.augment(x), self.augment(x)])
        p1, p2 = self.predictor(self.projector(encoders[self.modality](views).pooled)).chunk(2)
        with torch.no_grad():
            t1, t2 = self.target_projector(self.target_encoder(views).pooled).chunk(2)
        loss = byol_loss(p1, t2) + byol_loss(p2, t1)
        return ObjectiveOutput(loss, {"momentum": self.momentum})

    def after_step(self, encoders: Mapping[str, Encoder], progress: float) -> None:
        # τ is a function of progress only, so a resumed run needs no extra state to continue exactly
        self.momentum = cosine_momentum(self.base_momentum, progress)
        ema_update(self.target_encoder, encoders[self.modality], self.momentum)
        ema_update(self.target_projector, self.projector, self.momentum)
