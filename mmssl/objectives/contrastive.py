"""Contrastive objectives: positives pulled together, in-batch (or queued) negatives pushed apart."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from mmssl.encoders.base import Encoder
from mmssl.encoders.heads import mlp
from mmssl.objectives.base import Objective
from mmssl.objectives.distributed import gather, rank
from mmssl.registry import OBJECTIVES
from mmssl.types import Batch, ObjectiveOutput


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """NT-Xent (SimCLR, Chen et al. 2020) over two views (B, D) each; returns (loss, positive top-1 accuracy).

    With unit vectors ``z`` over the 2B views and ``s_ij = z_i·z_j / τ``, the loss for view i with
    positive p(i) is ``-log( exp(s_i,p(i)) / Σ_{k≠i} exp(s_ik) )``, averaged over all 2B views.
    Under torch.distributed the keys are gathered from every rank (with gradients) and each rank's
    queries use their own global offset, so the loss equals the single-process loss on the global batch.
    """
    z1, z2 = F.normalize(z1.float(), dim=1), F.normalize(z2.float(), dim=1)
    b = z1.shape[0]
    queries = torch.cat([z1, z2])  # (2B, D)
    k1, k2 = gather(z1), gather(z2)
    keys = torch.cat([k1, k2])  # (2WB, D)
    n = k1.shape[0]
    offset = rank() * b
    logits = queries @ keys.T / temperature
    idx = torch.arange(b, device=z1.device) + offset
    self_idx = torch.cat([idx, idx + n])
    pos_idx = torch.cat([idx + n, idx])
    rows = torch.arange(2 * b, device=z1.device)
    logits[rows, self_idx] = float("-inf")
    loss = F.cross_entropy(logits, pos_idx)
    accuracy = (logits.argmax(dim=1) == pos_idx).float().mean()
    return loss, accuracy


@OBJECTIVES.register("simclr", modalities=("image", "audio", "text", "obs"))
class SimCLR(Objective):
    """SimCLR: NT-Xent/InfoNCE between two augmented views through an MLP projector (Chen et al. 2020)."""

    modalities = ("image", "audio", "text", "obs")

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
