"""Generative objectives: reconstruct the input from the encoder's pooled feature through a decoder they own.

Images (B, C, H, W) are reconstructed at ``image_size``² (targets resized to it), vector observations
(B, ...) as their flattened values. The decoder is an MLP; image outputs go through a sigmoid ([0, 1]).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from mmssl.encoders.base import Encoder
from mmssl.errors import ConfigError, ShapeError
from mmssl.objectives.base import Objective
from mmssl.registry import OBJECTIVES
from mmssl.types import Batch, ObjectiveOutput


def _obs_size(encoder: Encoder, obs_dim: int | None) -> int:
    """Flattened observation size: ``obs_dim``, the encoder's ``obs_dim``/``in_dim``, or its first Linear's inputs."""
    for value in (obs_dim, getattr(encoder, "obs_dim", None), getattr(encoder, "in_dim", None)):
        if value:
            return int(math.prod(value) if isinstance(value, (tuple, list)) else value)
    first = next((m for m in encoder.modules() if isinstance(m, nn.Linear)), None)
    if first is None:
        raise ConfigError(f"cannot tell the observation size of {type(encoder).__name__}; set the objective's obs_dim")
    return first.in_features


class _Reconstruction(Objective):
    """Shared parts: target shape, decoder and the per-sample reconstruction error."""

    def __init__(self, encoders, modality, latent_dim, hidden_dim, image_size, obs_dim, augment, augment_kwargs):
        super().__init__(encoders, modality)
        encoder = encoders[self.modality]
        self.is_image = self.modality == "image" or hasattr(encoder, "in_channels")
        if self.is_image:
            self.target_shape = (int(getattr(encoder, "in_channels", 3)), image_size, image_size)
        else:
            self.target_shape = (_obs_size(encoder, obs_dim),)
        self.decoder = nn.Sequential(nn.Linear(latent_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, hidden_dim),
                                     nn.ReLU(), nn.Linear(hidden_dim, math.prod(self.target_shape)))
        self.augment = self.build_augment(augment, augment_kwargs)

    def target(self, x: torch.Tensor) -> torch.Tensor:
        """The clean input as a (B, prod(target_shape)) reconstruction target."""
        if self.is_image:
            if x.ndim != 4 or x.shape[1] != self.target_shape[0]:
                raise ShapeError(f"{self.registry_name} expects images (B, {self.target_shape[0]}, H, W), got {tuple(x.shape)}")
            if tuple(x.shape[-2:]) != self.target_shape[1:]:
                x = F.interpolate(x, size=self.target_shape[1:], mode="bilinear", align_corners=False, antialias=True)
        x = x.flatten(1).float()
        if x.shape[1] != self.target_shape[0] and not self.is_image:
            raise ShapeError(f"{self.registry_name} was built for observations of size {self.target_shape[0]}, "
                             f"got {tuple(x.shape)}; set obs_dim")
        return x

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        out = self.decoder(latent).float()
        return torch.sigmoid(out) if self.is_image else out


@OBJECTIVES.register("autoencoder", modalities=("image", "obs"))
class Autoencoder(_Reconstruction):
    """Autoencoder: reconstruct the input from the pooled feature (Hinton & Salakhutdinov 2006; denoising with an augment, Vincent et al. 2008).

    ``L = mean ‖dec(f(aug(x))) - x‖²`` over pixels/dimensions; the target is the clean input, so an
    augmentation (e.g. ``gaussian_noise``) turns it into a denoising autoencoder.
    """

    def __init__(self, encoders: Mapping[str, Encoder], modality: str | None = None, hidden_dim: int = 256,
                 image_size: int = 32, obs_dim: int | None = None, augment: str | None = "identity",
                 augment_kwargs: dict | None = None):
        dim = encoders[self.resolve_modality(encoders, modality)].dim
        super().__init__(encoders, modality, dim, hidden_dim, image_size, obs_dim, augment, augment_kwargs)

    def forward(self, batch: Batch, encoders: Mapping[str, Encoder]) -> ObjectiveOutput:
        x = self.inputs(batch)
        recon = self.decode(encoders[self.modality](self.augment(x)).pooled)
        loss = F.mse_loss(recon, self.target(x))
        return ObjectiveOutput(loss, {"reconstruction_mse": loss.item()})


@OBJECTIVES.register("vae", modalities=("image", "obs"))
class VAE(_Reconstruction):
    """Variational autoencoder with a β-weighted KL (Kingma & Welling 2014; β-VAE, Higgins et al. 2017).

    ``q(z|x) = N(μ, σ²)`` from linear heads on the pooled feature, ``z = μ + σ·ε``; the negative ELBO per
    sample is ``rec + β·KL`` with ``KL = ½ Σ (μ² + σ² - log σ² - 1)`` and ``rec = -log p(x|z)``: Bernoulli
    (binary cross-entropy summed over pixels) for images in [0, 1], unit Gaussian (½‖x - x̂‖² summed)
    for observations. ``loss`` is that negative ELBO divided by the input size, so its scale matches
    the other objectives; ``reconstruction``, ``kl`` and ``negative_elbo`` are logged per sample.
    """

    def __init__(self, encoders: Mapping[str, Encoder], modality: str | None = None, latent_dim: int = 16,
                 hidden_dim: int = 256, beta: float = 1.0, image_size: int = 32, obs_dim: int | None = None,
                 augment: str | None = "identity", augment_kwargs: dict | None = None):
        super().__init__(encoders, modality, latent_dim, hidden_dim, image_size, obs_dim, augment, augment_kwargs)
        if beta < 0:
            raise ConfigError(f"vae beta must be ≥ 0, got {beta}")
        self.beta = beta
        self.posterior = nn.Linear(encoders[self.modality].dim, 2 * latent_dim)

    def forward(self, batch: Batch, encoders: Mapping[str, Encoder]) -> ObjectiveOutput:
        x = self.inputs(batch)
        mu, log_var = self.posterior(encoders[self.modality](self.augment(x)).pooled).float().chunk(2, dim=1)
        log_var = log_var.clamp(-20, 20)  # keeps exp finite at initialisation and for duplicate inputs
        z = mu + torch.exp(0.5 * log_var) * torch.randn_like(mu)
        logits = self.decoder(z).float()
        target = self.target(x)
        if self.is_image:
            rec = F.binary_cross_entropy_with_logits(logits, target.clamp(0, 1), reduction="none").sum(1)
        else:
            rec = 0.5 * (logits - target).pow(2).sum(1)
        kl = 0.5 * (mu.pow(2) + log_var.exp() - log_var - 1).sum(1)
        negative_elbo = rec + self.beta * kl
        loss = negative_elbo.mean() / target.shape[1]
        return ObjectiveOutput(loss, {"reconstruction": rec.mean().item(), "kl": kl.mean().item(),
                                      "negative_elbo": (rec + kl).mean().item()})
