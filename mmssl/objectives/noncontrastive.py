"""Non-contrastive objectives: no negatives; collapse is avoided by asymmetry or by regularising statistics."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from mmssl.collectives import gather
from mmssl.encoders.base import Encoder
from mmssl.encoders.heads import mlp
from mmssl.objectives.base import Objective, cosine_momentum, ema_update
from mmssl.objectives.contrastive import float32
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
    As the official code (deepmind byol ``byol_experiment.py``), the two directions are summed, not
    averaged; its base τ is 0.996 (the default 0.99 here suits runs of a few hundred steps).
    """

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


class _TwoViews(Objective):
    """Two augmented views → encoder → projector: the shared front of SimSiam, Barlow Twins and VICReg."""

    def __init__(self, encoders, modality, projector_dims: tuple[int, int, int], augment, augment_kwargs,
                 last_batch_norm: bool = False):
        super().__init__(encoders, modality)
        hidden, out, layers = projector_dims
        self.projector = mlp(encoders[self.modality].dim, hidden, out, layers, last_batch_norm=last_batch_norm)
        self.augment = self.build_augment(augment, augment_kwargs)

    def project(self, batch: Batch, encoders: Mapping[str, Encoder]) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.inputs(batch)
        views = torch.cat([self.augment(x), self.augment(x)])
        z1, z2 = self.projector(encoders[self.modality](views).pooled).float().chunk(2)
        return z1, z2


@OBJECTIVES.register("simsiam", modalities=("image", "audio", "text", "obs"))
class SimSiam(_TwoViews):
    """SimSiam: predictor + stop-gradient, no negatives and no momentum encoder (Chen & He 2021).

    ``L = ½·D(p₁, sg(z₂)) + ½·D(p₂, sg(z₁))`` with ``D(p, z) = -cos(p, z)`` per sample, averaged; the
    projector is a BN MLP ending in affine-free BN, the predictor a bottleneck MLP (``predictor_dim``).
    This is the official code's form (facebookresearch/simsiam ``main_simsiam.py``:
    ``-(cos(p₁, z₂).mean() + cos(p₂, z₁).mean())·0.5``). Purely per-sample, so nothing is gathered across ranks. ``output_std`` (std of the unit-normalised
    z, ≈1/√P when healthy, 0 when collapsed) is logged as the collapse indicator of the paper.
    """

    def __init__(self, encoders: Mapping[str, Encoder], modality: str | None = None, projection_dim: int = 128,
                 hidden_dim: int = 512, predictor_dim: int = 64, augment: str | None = None,
                 augment_kwargs: dict | None = None):
        super().__init__(encoders, modality, (hidden_dim, projection_dim, 3), augment, augment_kwargs,
                         last_batch_norm=True)
        self.predictor = mlp(projection_dim, predictor_dim, projection_dim, 2)

    def forward(self, batch: Batch, encoders: Mapping[str, Encoder]) -> ObjectiveOutput:
        z1, z2 = self.project(batch, encoders)
        p1, p2 = self.predictor(z1), self.predictor(z2)
        loss = -(F.cosine_similarity(p1, z2.detach(), dim=-1).mean() + F.cosine_similarity(p2, z1.detach(), dim=-1).mean()) / 2
        std = F.normalize(z1.detach(), dim=1).std(dim=0).mean()
        return ObjectiveOutput(loss, {"output_std": std.item()})


def standardise(z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """(N, P) → zero mean, unit (biased) variance per column, as BatchNorm1d without affine; eps keeps constant columns finite."""
    return (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + eps)


@float32
def barlow_twins_loss(z1: torch.Tensor, z2: torch.Tensor, lambda_offdiag: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Barlow Twins (Zbontar et al. 2021) on (N, P) projections: ``Σ_i (1-C_ii)² + λ Σ_{i≠j} C_ij²``.

    ``C = z̃₁ᵀ z̃₂ / N`` is the cross-correlation of the batch-standardised views. Returns (loss, mean
    on-diagonal correlation).
    """
    n = z1.shape[0]
    c = standardise(z1).T @ standardise(z2) / n  # (P, P)
    diag = torch.diagonal(c)
    off = c - torch.diag_embed(diag)
    return (1 - diag).pow(2).sum() + lambda_offdiag * off.pow(2).sum(), diag.mean()


@OBJECTIVES.register("barlow_twins", modalities=("image", "audio", "text", "obs"))
class BarlowTwins(_TwoViews):
    """Barlow Twins: make the cross-correlation of two views' projections the identity (Zbontar et al. 2021).

    See ``barlow_twins_loss``; the projections are gathered over ranks with gradients first, so the batch
    statistics (and the loss) are those of the global batch. ``lambda_offdiag`` defaults to the official
    code's 0.0051 (facebookresearch/barlowtwins ``main.py --lambd``; the paper prints 5·10⁻³);
    ``1/projection_dim`` is a good choice for small projectors. The official loss is
    ``on_diag + λ·off_diag`` with ``c = bn(z₁)ᵀbn(z₂)/N`` (affine-free BatchNorm, biased variance), as here;
    its first release also multiplied by ``scale_loss = 1/32``, later dropped (not applied here).
    """

    def __init__(self, encoders: Mapping[str, Encoder], modality: str | None = None, projection_dim: int = 128,
                 hidden_dim: int = 512, lambda_offdiag: float = 0.0051, augment: str | None = None,
                 augment_kwargs: dict | None = None):
        super().__init__(encoders, modality, (hidden_dim, projection_dim, 3), augment, augment_kwargs)
        self.lambda_offdiag = lambda_offdiag

    def forward(self, batch: Batch, encoders: Mapping[str, Encoder]) -> ObjectiveOutput:
        z1, z2 = self.project(batch, encoders)
        loss, on_diag = barlow_twins_loss(gather(z1), gather(z2), self.lambda_offdiag)
        return ObjectiveOutput(loss, {"on_diagonal_correlation": on_diag.item()})


@float32
def vicreg_loss(z1: torch.Tensor, z2: torch.Tensor, sim_weight: float, var_weight: float, cov_weight: float,
                gamma: float = 1.0, eps: float = 1e-4) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """VICReg (Bardes, Ponce & LeCun 2022) on (N, P) projections: ``λ·s + μ·½(v(z₁)+v(z₂)) + ν·(c(z₁)+c(z₂))``.

    ``s = mean‖z₁-z₂‖²/P`` (MSE); ``v(z) = mean_j max(0, γ - √(Var z_j + ε))``; ``c(z) = Σ_{i≠j} Cov(z)_ij² / P``
    with unbiased (co)variances. The paper's Eq. 6 sums the two branches' variance terms; the official code
    (facebookresearch/vicreg ``main_vicreg.py``: ``std_loss = mean(relu(1-std_x))/2 + mean(relu(1-std_y))/2``)
    and lightly average them, and μ = 25 was tuned with the average, so this follows the code. The
    covariance terms are summed in both. Returns (loss, the three terms; ``variance`` is the average).
    """
    n, p = z1.shape
    invariance = F.mse_loss(z1, z2)

    def variance(z):
        return F.relu(gamma - torch.sqrt(z.var(0) + eps)).mean()

    def covariance(z):
        z = z - z.mean(0)
        cov = z.T @ z / max(n - 1, 1)
        return (cov.pow(2).sum() - torch.diagonal(cov).pow(2).sum()) / p

    terms = {"invariance": invariance, "variance": (variance(z1) + variance(z2)) / 2, "covariance": covariance(z1) + covariance(z2)}
    loss = sim_weight * terms["invariance"] + var_weight * terms["variance"] + cov_weight * terms["covariance"]
    return loss, terms


@OBJECTIVES.register("vicreg", modalities=("image", "audio", "text", "obs"))
class VICReg(_TwoViews):
    """VICReg: invariance + variance hinge + covariance decorrelation (Bardes, Ponce & LeCun 2022).

    See ``vicreg_loss``; projections are gathered over ranks with gradients, so the variance and
    covariance are the global batch's. Defaults λ = μ = 25, ν = 1 as in the paper and the official code,
    whose convention (variance averaged over the two branches) ``vicreg_loss`` follows.
    """

    def __init__(self, encoders: Mapping[str, Encoder], modality: str | None = None, projection_dim: int = 128,
                 hidden_dim: int = 512, sim_weight: float = 25.0, var_weight: float = 25.0, cov_weight: float = 1.0,
                 augment: str | None = None, augment_kwargs: dict | None = None):
        super().__init__(encoders, modality, (hidden_dim, projection_dim, 3), augment, augment_kwargs)
        self.weights = (sim_weight, var_weight, cov_weight)

    def forward(self, batch: Batch, encoders: Mapping[str, Encoder]) -> ObjectiveOutput:
        z1, z2 = self.project(batch, encoders)
        loss, terms = vicreg_loss(gather(z1), gather(z2), *self.weights)
        return ObjectiveOutput(loss, {k: v.item() for k, v in terms.items()})

