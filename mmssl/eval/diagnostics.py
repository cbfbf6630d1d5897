"""Representation diagnostics: effective rank (collapse), alignment and uniformity (Wang & Isola 2020)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def effective_rank(features: torch.Tensor, eps: float = 1e-12) -> float:
    """exp(entropy of the normalised singular values) of centred (N, D) features (Roy & Vetterli 2007).

    1 for a collapsed (rank-one) representation, up to min(N, D) when all directions are used equally.
    """
    x = torch.as_tensor(features, dtype=torch.float64)
    x = x - x.mean(dim=0, keepdim=True)
    s = torch.linalg.svdvals(x)
    if s.sum() <= eps:
        return 1.0
    p = s / s.sum()
    return float(torch.exp(-(p * torch.log(p + eps)).sum()))


def alignment(z1: torch.Tensor, z2: torch.Tensor, alpha: float = 2.0) -> float:
    """E ‖f(x) − f(x⁺)‖^α over positive pairs of L2-normalised features (lower is better)."""
    z1, z2 = F.normalize(z1.double(), dim=1), F.normalize(z2.double(), dim=1)
    return float((z1 - z2).norm(dim=1).pow(alpha).mean())


def uniformity(z: torch.Tensor, t: float = 2.0) -> float:
    """log E exp(−t‖f(x) − f(y)‖²) over all pairs of L2-normalised features (lower is more uniform)."""
    z = F.normalize(z.double(), dim=1)
    return float(torch.pdist(z, p=2).pow(2).mul(-t).exp().mean().log())
