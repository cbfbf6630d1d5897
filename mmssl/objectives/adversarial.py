"""Adversarial objectives: context-encoder inpainting and BiGAN/ALI, each with its own discriminator.

A GAN is a two-player game, but the trainer runs one optimiser over one loss. The discriminator D is
therefore kept out of the trainer's optimiser (its parameters have ``requires_grad=False`` whenever
the trainer can see them) and trained here by an internal Adam:

1. ``forward`` returns the encoder/generator loss, computed through a frozen D (gradients reach the
   encoder, decoder and generator through D's inputs, never D's weights), and builds D's own loss
   ``L_D`` on *detached* real/fake inputs (its graph reaches D's weights only);
2. the trainer steps its optimiser, then calls ``after_step``, where ``L_D`` is differentiated with
   respect to D's weights and D takes one Adam step.

Why not a gradient-reversal layer into the shared optimiser: it gives only the saturating minimax
loss for the generator (the non-saturating one, which every reference code uses, is not ``-L_D``),
and TTUR (a separate, larger discriminator learning rate, Heusel et al. 2017) is impossible with one
Adam, which is invariant to the gradient scale a reversal layer could apply. D's Adam state travels in
the module's state dict (``get_extra_state``), so checkpoints hold it and a resumed run continues
exactly. D's learning rate is constant (the trainer's warm-up/cosine schedule applies to the encoder
and generator). Stability: spectral normalisation on every D layer (Miyato et al. 2018), Adam with
β₁ = 0.5 (DCGAN), TTUR via ``discriminator_lr``. Under torch.distributed D's gradients are averaged
over ranks before its step; nothing else depends on the batch (no BatchNorm in D or the generator).
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Mapping

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from mmssl.collectives import world_size
from mmssl.encoders.base import Encoder
from mmssl.encoders.heads import mlp
from mmssl.errors import ConfigError, ShapeError
from mmssl.objectives.base import Objective
from mmssl.registry import OBJECTIVES
from mmssl.types import Batch, ObjectiveOutput


class Discriminator(nn.Module):
    """Logit D(x) (or D(x, z) when ``latent_dim`` > 0) for images (B, C, S, S) [and latents (B, Z)] → (B,).

    Image path: stride-2 4×4 convolutions with LeakyReLU(0.2) (two for S ≤ 16, three above), flattened;
    latent path: a linear layer; the two are concatenated and mapped to one logit by a 2-layer MLP
    (BiGAN's joint discriminator). Every layer is spectrally normalised when ``spectral_norm``.
    """

    def __init__(self, channels: int, image_size: int, latent_dim: int = 0, width: int = 32, hidden_dim: int = 256,
                 spectral_norm: bool = True):
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm if spectral_norm else (lambda m: m)
        layers, c, s = [], channels, image_size
        for i in range(2 if image_size <= 16 else 3):
            layers += [sn(nn.Conv2d(c, width * 2 ** i, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
            c, s = width * 2 ** i, s // 2
        self.image = nn.Sequential(*layers, nn.Flatten())
        self.latent = nn.Sequential(sn(nn.Linear(latent_dim, hidden_dim)), nn.LeakyReLU(0.2)) if latent_dim else None
        joint = c * s * s + (hidden_dim if latent_dim else 0)
        self.joint = nn.Sequential(sn(nn.Linear(joint, hidden_dim)), nn.LeakyReLU(0.2), sn(nn.Linear(hidden_dim, 1)))

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        h = self.image(x)
        if self.latent is not None:
            h = torch.cat([h, self.latent(z)], dim=1)
        return self.joint(h).squeeze(1).float()


@contextlib.contextmanager
def trainable(module: nn.Module):
    """Temporarily give ``module``'s parameters ``requires_grad=True`` (they are frozen everywhere else)."""
    module.requires_grad_(True)
    try:
        yield
    finally:
        module.requires_grad_(False)


def bce(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """``-mean log σ(l)`` (target real) or ``-mean log(1 - σ(l))`` (target fake), in float32."""
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits.float(), target)


class _Adversarial(Objective):
    """Owns a discriminator that only its internal Adam trains (see the module docstring)."""

    def __init__(self, encoders, modality, image_size: int, discriminator_lr: float,
                 discriminator_betas: tuple[float, float], augment, augment_kwargs):
        super().__init__(encoders, modality)
        name = type(self).registry_name
        if image_size < 4:
            raise ConfigError(f"{name} image_size must be ≥ 4, got {image_size}")
        if discriminator_lr <= 0:
            raise ConfigError(f"{name} discriminator_lr must be positive, got {discriminator_lr}")
        self.channels = int(getattr(encoders[self.modality], "in_channels", 3))
        self.image_size = image_size
        self.discriminator_lr, self.discriminator_betas = discriminator_lr, tuple(float(b) for b in discriminator_betas)
        self.augment = self.build_augment(augment, augment_kwargs)
        self._pending: torch.Tensor | None = None  # L_D with its graph to D's weights, stepped in after_step

    def init_discriminator(self, discriminator: Discriminator) -> None:
        self.discriminator = discriminator.requires_grad_(False)  # never in the trainer's optimiser
        self.d_optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=self.discriminator_lr,
                                            betas=self.discriminator_betas)

    def resize(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) → (B, C, S, S) at ``image_size``, the resolution of D and the decoder/generator."""
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ShapeError(f"{self.registry_name} expects images (B, {self.channels}, H, W), got {tuple(x.shape)}")
        if tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False,
                              antialias=True)
        return x.float()

    def discriminator_loss(self, real: tuple, fake: tuple) -> tuple[torch.Tensor, float]:
        """``L_D = -mean log D(real) - mean log(1 - D(fake))`` on detached inputs, and D's accuracy.

        In training the graph reaches D's weights (kept for ``after_step``); in evaluation no graph is built.
        """
        real, fake = [t.detach() for t in real], [t.detach() for t in fake]
        with trainable(self.discriminator) if self.training else torch.no_grad():
            real_logit, fake_logit = self.discriminator(*real), self.discriminator(*fake)
            loss = bce(real_logit, True) + bce(fake_logit, False)
        accuracy = 0.5 * ((real_logit > 0).float().mean() + (fake_logit < 0).float().mean()).item()
        if self.training:
            self._pending = loss
        return loss, accuracy

    def after_step(self, encoders: Mapping[str, Encoder], progress: float) -> None:
        """One Adam step of D on the ``L_D`` of the last training forward."""
        if self._pending is None:
            return
        loss, self._pending = self._pending, None
        params = list(self.discriminator.parameters())
        with trainable(self.discriminator):
            grads = torch.autograd.grad(loss, params)
        if world_size() > 1:
            flat = torch.cat([g.flatten() for g in grads])
            dist.all_reduce(flat)
            flat /= world_size()
            grads = [chunk.view_as(p) for chunk, p in zip(flat.split([p.numel() for p in params]), params)]
        for p, g in zip(params, grads):
            p.grad = g.to(p.dtype)
        self.d_optimizer.step()
        for p in params:
            p.grad = None

    # D's optimiser state rides in the state dict (plain tensors and numbers: weights_only-loadable)
    def get_extra_state(self):
        return {"discriminator_optimizer": self.d_optimizer.state_dict()}

    def set_extra_state(self, state) -> None:
        # a copy: Adam keeps the given tensors when they are already on the right device, which would tie
        # this optimiser's moments to the source's when loading from a live state dict
        self.d_optimizer.load_state_dict(copy.deepcopy(state["discriminator_optimizer"]))


def region_mask(batch: int, size: int, fraction: float, mode: str, device) -> torch.Tensor:
    """(B, 1, S, S) bool: a square of side ``round(S·√fraction)`` at the centre, or at a random place per sample."""
    side = min(size - 1, max(1, round(size * math.sqrt(fraction))))
    if mode == "center":
        top = torch.full((batch,), (size - side) // 2, device=device)
        left = top
    else:
        top = torch.randint(0, size - side + 1, (batch,), device=device)
        left = torch.randint(0, size - side + 1, (batch,), device=device)
    pos = torch.arange(size, device=device)
    rows = (pos >= top[:, None]) & (pos < top[:, None] + side)  # (B, S)
    cols = (pos >= left[:, None]) & (pos < left[:, None] + side)
    return (rows[:, :, None] & cols[:, None, :])[:, None]


@OBJECTIVES.register("context_encoder", modalities=("image",))
class ContextEncoder(_Adversarial):
    """Context encoder: inpaint a hidden region from its context, L2 + adversarial (Pathak et al. 2016).

    With the region mask M̂ (B, 1, S, S) (``mask``: ``center`` square of ``mask_fraction`` of the area,
    or ``random_block``, a square of that size anywhere), the encoder reads ``(1-M̂)⊙x + M̂·fill`` and
    a decoder F (MLP on the pooled feature, sigmoid) predicts the image (B, C, S, S):

        L_rec = ‖M̂ ⊙ (x - F((1-M̂)⊙x))‖² / (C·|M̂|)
        L_adv = -log D(x̃),   x̃ = (1-M̂)⊙x + M̂⊙F(…)   (non-saturating, as the official code's errG_D)
        L     = λ_rec·L_rec + λ_adv·L_adv,   λ_rec = 0.999, λ_adv = 0.001 (paper and code)
        L_D   = -log D(x) - log(1 - D(sg(x̃)))          (trained in ``after_step``, see the module docstring)

    Differences from the official code (pathak22/context-encoder): its D reads only the predicted
    centre patch, here D reads the completed image (so the same D serves random blocks); its L2 weighs
    a 4-pixel overlap band 10× (not done here); the decoder is an MLP rather than up-convolutions. The
    fill is a constant (the code fills with the ImageNet mean, ≈ 0.46 in [0, 1]); spectral norm on D is
    an addition for stability. Everything runs at ``image_size`` (inputs are resized to it).
    """

    def __init__(self, encoders: Mapping[str, Encoder], modality: str | None = None, image_size: int = 32,
                 mask: str = "center", mask_fraction: float = 0.25, fill: float = 0.5, hidden_dim: int = 512,
                 rec_weight: float = 0.999, adv_weight: float = 0.001, discriminator_width: int = 32,
                 discriminator_hidden_dim: int = 256, discriminator_lr: float = 2e-4,
                 discriminator_betas: tuple[float, float] = (0.5, 0.999), spectral_norm: bool = True,
                 augment: str | None = "identity", augment_kwargs: dict | None = None):
        super().__init__(encoders, modality, image_size, discriminator_lr, discriminator_betas, augment, augment_kwargs)
        if mask not in ("center", "random_block"):
            raise ConfigError(f"context_encoder mask must be 'center' or 'random_block', got {mask!r}")
        if not 0.0 < mask_fraction < 1.0:
            raise ConfigError(f"context_encoder mask_fraction must be in (0, 1), got {mask_fraction}")
        if rec_weight < 0 or adv_weight < 0:
            raise ConfigError(f"context_encoder weights must be ≥ 0, got rec_weight={rec_weight}, adv_weight={adv_weight}")
        self.mask, self.mask_fraction, self.fill = mask, mask_fraction, fill
        self.rec_weight, self.adv_weight = rec_weight, adv_weight
        out = self.channels * image_size ** 2
        self.decoder = mlp(encoders[self.modality].dim, hidden_dim, out, 3, batch_norm=False)
        self.init_discriminator(Discriminator(self.channels, image_size, 0, discriminator_width,
                                              discriminator_hidden_dim, spectral_norm))

    def forward(self, batch: Batch, encoders: Mapping[str, Encoder]) -> ObjectiveOutput:
        x = self.resize(self.augment(self.inputs(batch)))
        b = len(x)
        region = region_mask(b, self.image_size, self.mask_fraction, self.mask, x.device)  # (B, 1, S, S)
        context = torch.where(region, torch.full_like(x, self.fill), x)
        pred = torch.sigmoid(self.decoder(encoders[self.modality](context).pooled).float())
        pred = pred.view(b, self.channels, self.image_size, self.image_size)
        completed = torch.where(region, pred, x)
        reconstruction = ((pred - x).pow(2) * region).sum() / (region.sum() * self.channels).clamp(min=1)
        adversarial = bce(self.discriminator(completed), True)
        loss = self.rec_weight * reconstruction + self.adv_weight * adversarial
        d_loss, d_accuracy = self.discriminator_loss((x,), (completed,))
        return ObjectiveOutput(loss, {"reconstruction_mse": reconstruction.item(), "adversarial": adversarial.item(),
                                      "discriminator_loss": d_loss.item(), "discriminator_accuracy": d_accuracy})


@OBJECTIVES.register("bigan", modalities=("image",))
class BiGAN(_Adversarial):
    """BiGAN / ALI: encoder E, generator G and a joint discriminator D(x, z) (Donahue et al. 2017; Dumoulin et al. 2017).

    E(x) = a linear latent head on the encoder's pooled feature (B, Z); G(z) an MLP (sigmoid) to images
    (B, C, S, S) with z ~ N(0, I) (ALI's prior). The game is

        min_{E,G} max_D  E_x[log D(x, E(x))] + E_z[log(1 - D(G(z), z))]

    trained as in both reference codes with the labels inverted for E and G (non-saturating):

        L_{E,G} = -log(1 - D(x, E(x))) - log D(G(z), z)
        L_D     = -log D(x, sg(E(x))) - log(1 - D(sg(G(z)), z))     (``after_step``, module docstring)

    The encoder's features are the representation (its pooled output is what the probes read). Logged:
    D's loss and accuracy and ``reconstruction_mse`` = ‖G(E(x)) - x‖² (how well E inverts G).
    Additions to the papers for stability: spectral norm on D, TTUR (``discriminator_lr``, default 2×
    the recipes' generator lr). BiGAN used a uniform prior and Adam(2e-4, β₁ = 0.5) for all players.
    """

    def __init__(self, encoders: Mapping[str, Encoder], modality: str | None = None, latent_dim: int = 32,
                 image_size: int = 32, hidden_dim: int = 512, discriminator_width: int = 32,
                 discriminator_hidden_dim: int = 256, discriminator_lr: float = 4e-4,
                 discriminator_betas: tuple[float, float] = (0.5, 0.999), spectral_norm: bool = True,
                 augment: str | None = "identity", augment_kwargs: dict | None = None):
        super().__init__(encoders, modality, image_size, discriminator_lr, discriminator_betas, augment, augment_kwargs)
        if latent_dim < 1:
            raise ConfigError(f"bigan latent_dim must be ≥ 1, got {latent_dim}")
        self.latent_dim = latent_dim
        self.latent_head = nn.Linear(encoders[self.modality].dim, latent_dim)
        self.generator = mlp(latent_dim, hidden_dim, self.channels * image_size ** 2, 3, batch_norm=False)
        self.init_discriminator(Discriminator(self.channels, image_size, latent_dim, discriminator_width,
                                              discriminator_hidden_dim, spectral_norm))

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (B, Z) → images (B, C, S, S) in [0, 1]."""
        return torch.sigmoid(self.generator(z).float()).view(len(z), self.channels, self.image_size, self.image_size)

    def forward(self, batch: Batch, encoders: Mapping[str, Encoder]) -> ObjectiveOutput:
        x = self.augment(self.inputs(batch))
        z_hat = self.latent_head(encoders[self.modality](x).pooled).float()  # E(x)
        real = self.resize(x)
        z = torch.randn(len(x), self.latent_dim, device=x.device)
        fake = self.generate(z)
        loss = bce(self.discriminator(real, z_hat), False) + bce(self.discriminator(fake, z), True)
        d_loss, d_accuracy = self.discriminator_loss((real, z_hat), (fake, z))
        with torch.no_grad():
            reconstruction = (self.generate(z_hat) - real).pow(2).mean()
        return ObjectiveOutput(loss, {"discriminator_loss": d_loss.item(), "discriminator_accuracy": d_accuracy,
                                      "reconstruction_mse": reconstruction.item()})
