"""MAE on ViT patches and on spectrogram patches (Audio-MAE), plus the patch-index helpers I-JEPA and data2vec share.

These objectives read encoders that implement the patch protocol of ``mmssl.encoders.vit`` (``embed`` →
``PatchEmbedding``, ``transform`` on any subset of tokens): ``vit`` for images, ``audio_transformer``
for log-mel spectrograms.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from open_clip.transformer import ResidualAttentionBlock
from torch import nn

from mmssl.encoders.base import Encoder
from mmssl.encoders.vit import require_patch_encoder, sincos_2d
from mmssl.errors import ConfigError
from mmssl.objectives.base import Objective
from mmssl.registry import OBJECTIVES
from mmssl.types import Batch, ObjectiveOutput


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """Losses in float32 under bf16 autocast, without downcasting float64 (gradient checks)."""
    return x if x.dtype == torch.float64 else x.float()


def take(tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(B, N, D) tokens at (B, K) indices → (B, K, D)."""
    return torch.gather(tokens, 1, index[..., None].expand(-1, -1, tokens.shape[-1]))


def mae_random_masking(batch: int, n: int, ratio: float, device=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MAE's per-sample random masking (``random_masking`` of the official code).

    ``noise ~ U(0,1)^(B×N)``; the ``K = max(1, int(N·(1 - ratio)))`` lowest-noise patches stay visible.
    Returns ``keep`` (B, K) visible indices in shuffled order, ``mask`` (B, N) float (1 = masked), and
    ``restore`` (B, N), the permutation that puts ``[visible, masked]`` back in patch order.
    """
    keep_n = max(1, int(n * (1 - ratio)))
    noise = torch.rand(batch, n, device=device)
    shuffle = noise.argsort(dim=1)
    restore = shuffle.argsort(dim=1)
    mask = torch.ones(batch, n, device=device)
    mask[:, :keep_n] = 0
    return shuffle[:, :keep_n], torch.gather(mask, 1, restore), restore


def normalise_patches(patches: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """MAE's ``norm_pix_loss`` target: each patch (B, N, P) standardised over its P values, ``(x - μ)/√(σ² + ε)``
    with the unbiased variance as in the official code (``.var(dim=-1)``)."""
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True)
    return (patches - mean) / (var + eps).sqrt()


def blocks(width: int, depth: int, heads: int, mlp_ratio: float = 4.0) -> nn.ModuleList:
    """``depth`` pre-norm transformer blocks (open_clip's, the same block as the ``vit`` encoder)."""
    if width % heads or width % 4:
        raise ConfigError(f"a transformer of width {width} needs width divisible by heads={heads} and by 4")
    return nn.ModuleList(ResidualAttentionBlock(width, heads, mlp_ratio) for _ in range(depth))


@OBJECTIVES.register("mae", modalities=("image", "audio"))
class MAE(Objective):
    """MAE / Audio-MAE: reconstruct masked patches from an encoder that sees only the visible ones (He et al. 2022).

    On spectrogram patches this is Audio-MAE (Huang et al. 2022; ``objective=mae_audio`` masks 80 %).

    ``keep, mask = random_masking(N, mask_ratio)``; ``z = f(x_keep + pos_keep)`` runs the encoder on the
    K = int(N·(1 - r)) visible tokens only; a lightweight decoder (linear to ``decoder_width``, mask
    tokens at the masked positions, fixed 2-D sin/cos positions, ``decoder_depth`` blocks, LayerNorm,
    linear to the P values of a patch) predicts every patch, and

        L = Σ_i m_i · mean_p (x̂_ip - t_ip)² / Σ_i m_i,  t = norm_pix(x) (per-patch standardised) or x

    over the masked patches only (m_i = 1). Targets are the patches of the encoder's normalised input
    (normalised pixels; the per-clip standardised log-mel for audio); as in the official code the
    variance of ``norm_pix`` is unbiased and the visible count is ``int``-rounded. Unlike the official
    code the decoder carries no class token (``vit`` has none; an open_clip tower keeps its own inside
    ``transform``). Audio-MAE's shifted-window local decoder attention is not implemented: the decoder
    is global, as in image MAE. ``normalize_target`` defaults to on: the official argparse default of
    ``--norm_pix_loss`` is off, but the paper's results and its README's pre-training command use it.
    """

    def __init__(self, encoders: Mapping[str, Encoder], modality: str | None = None, mask_ratio: float = 0.75,
                 decoder_width: int = 64, decoder_depth: int = 2, decoder_heads: int = 4,
                 normalize_target: bool = True, augment: str | None = "identity", augment_kwargs: dict | None = None):
        super().__init__(encoders, modality)
        if not 0.0 < mask_ratio < 1.0:
            raise ConfigError(f"mae mask_ratio must be in (0, 1), got {mask_ratio}")
        encoder = encoders[self.modality]
        require_patch_encoder(encoder, "mae")
        self.mask_ratio, self.normalize_target, self.decoder_width = mask_ratio, normalize_target, decoder_width
        self.decoder_embed = nn.Linear(encoder.dim, decoder_width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_width))
        nn.init.normal_(self.mask_token, std=0.02)  # as the official code
        self.decoder_blocks = blocks(decoder_width, decoder_depth, decoder_heads)
        self.decoder_norm = nn.LayerNorm(decoder_width)
        self.decoder_pred = nn.Linear(decoder_width, encoder.patch_dim)
        self.augment = self.build_augment(augment, augment_kwargs)

    def decode(self, latent: torch.Tensor, restore: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """(B, K, D) visible latents + (B, N) restore permutation → (B, N, P) predicted patches."""
        y = self.decoder_embed(latent)
        b, k, d = y.shape
        n = restore.shape[1]
        y = torch.cat([y, self.mask_token.to(y.dtype).expand(b, n - k, d)], dim=1)
        y = take(y, restore) + sincos_2d(*grid, d, y.device).to(y.dtype)[None]
        for block in self.decoder_blocks:
            y = block(y)
        return self.decoder_pred(self.decoder_norm(y))

    def forward(self, batch: Batch, encoders: Mapping[str, Encoder]) -> ObjectiveOutput:
        encoder = encoders[self.modality]
        e = encoder.embed(self.augment(self.inputs(batch)))
        b, n, _ = e.tokens.shape
        keep, mask, restore = mae_random_masking(b, n, self.mask_ratio, e.tokens.device)
        latent = encoder.transform(take(e.tokens + e.pos, keep))  # the encoder sees the visible tokens only
        pred = self.decode(latent, restore, e.grid)
        target = at_least_float32(e.patches.detach())
        if self.normalize_target:
            target = normalise_patches(target)
        per_patch = (at_least_float32(pred) - target).pow(2).mean(-1)  # (B, N)
        loss = (per_patch * mask).sum() / mask.sum()
        return ObjectiveOutput(loss, {"mask_ratio": mask.mean().item()})
