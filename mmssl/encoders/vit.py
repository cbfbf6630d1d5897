"""A small ViT that can run on a subset of its patches (MAE, I-JEPA, data2vec), and the patch protocol it shares.

Patch protocol — what masked-patch objectives code against (``vit`` here; ``audio_transformer`` on
log-mel patches implements it too):

- ``embed(x) -> PatchEmbedding``: patch embeddings without positions (B, N, D), their positions
  (1, N, D), the input values each patch covers (B, N, P) and the (rows, cols) grid, tokens row-major;
- ``transform(tokens) -> (B, K, D)``: the transformer blocks and final LayerNorm on any K ≤ N tokens
  (positions already added), so an objective can drop or replace tokens before the encoder sees them;
- ``encode(x)`` = ``transform(embed.tokens + embed.pos)`` on every patch; ``patch_dim`` = P; ``token_width``
  (when it differs from ``dim``) the width of the embeddings ``embed`` returns.

``open_clip_vision`` implements it for plain open_clip ViT towers (its class token is added inside ``transform``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from open_clip.transformer import ResidualAttentionBlock
from torch import nn

from mmssl.encoders.base import Encoder, ImageEncoder
from mmssl.errors import ConfigError, ShapeError
from mmssl.registry import ENCODERS
from mmssl.types import IMAGE, EncoderOutput


@dataclass
class PatchEmbedding:
    """``tokens`` (B, N, D) patch embeddings, ``pos`` (1, N, D) their positions, ``patches`` (B, N, P) the
    (normalised) input values under each patch, ``grid`` (rows, cols) with ``rows·cols = N``, row-major."""

    tokens: torch.Tensor
    pos: torch.Tensor
    patches: torch.Tensor
    grid: tuple[int, int]


def sincos_2d(rows: int, cols: int, dim: int, device=None) -> torch.Tensor:
    """(rows·cols, dim) fixed 2-D sin/cos positions, row-major (MAE's ``get_2d_sincos_pos_embed``):
    the first half of the channels encodes the column, the second half the row, each as 1-D sin/cos."""
    if dim % 4:
        raise ConfigError(f"2-D sin/cos positions need a width divisible by 4, got {dim}")

    def one_d(pos: torch.Tensor, d: int) -> torch.Tensor:
        omega = 1.0 / 10000 ** (torch.arange(d // 2, dtype=torch.float64, device=device) / (d / 2))
        out = pos.double().flatten()[:, None] * omega[None]
        return torch.cat([out.sin(), out.cos()], dim=1)

    r, c = torch.meshgrid(torch.arange(rows, device=device), torch.arange(cols, device=device), indexing="ij")
    return torch.cat([one_d(c, dim // 2), one_d(r, dim // 2)], dim=1).float()


def require_patch_encoder(encoder: Encoder, objective: str) -> None:
    """A one-line error when ``encoder`` does not implement the patch protocol (``embed`` + ``transform``)."""
    if not (callable(getattr(encoder, "embed", None)) and callable(getattr(encoder, "transform", None))):
        raise ConfigError(f"objective {objective!r} runs the encoder on a subset of its patches, which "
                          f"{type(encoder).__name__} cannot do; use encoder=vit_tiny (images), open_clip_vision (a ViT "
                          "tower) or an audio_transformer (spectrogram patches)")
    encoder.patch_dim  # noqa: B018 — towers that implement the protocol only for some configurations say so here


@ENCODERS.register("vit", modalities=(IMAGE,))
class ViT(ImageEncoder):
    """A small ViT (Dosovitskiy et al. 2021) that can run on a subset of its patches (MAE, I-JEPA, data2vec).

    open_clip's pre-norm blocks, fixed 2-D sin/cos positions as in MAE, no class token, mean-pooled.

    Images (B, C, H, W) in [0, 1] are resized to ``image_size`` (``None``: kept at their size, which
    ``patch_size`` must divide), normalised, cut into ``patch_size``² patches by a strided conv
    (``(H/patch_size)·(W/patch_size)`` tokens, row-major) and run through ``depth``
    blocks of width ``width``. tokens: (B, N, width) after the final LayerNorm; pooled: their mean.
    Implements the patch protocol of this module (objectives may drop or replace patches).
    """

    def __init__(self, in_channels: int = 1, image_size: int | None = 8, patch_size: int = 2, width: int = 64,
                 depth: int = 4, heads: int = 4, mlp_ratio: float = 4.0,
                 mean: float | list[float] = 0.5, std: float | list[float] = 0.25):
        super().__init__()
        if image_size is not None and image_size % patch_size:
            raise ConfigError(f"vit: patch_size={patch_size} must divide image_size={image_size}")
        if width % heads:
            raise ConfigError(f"vit: width={width} must be divisible by heads={heads}")
        self._set_norm(in_channels, mean, std)
        self.image_size, self.patch_size = image_size, patch_size
        self.patch_dim = in_channels * patch_size ** 2
        self.patch_embed = nn.Conv2d(in_channels, width, patch_size, stride=patch_size)
        self._pos: dict[tuple, torch.Tensor] = {}  # fixed sin/cos positions per (patch grid, device)
        self.blocks = nn.ModuleList(ResidualAttentionBlock(width, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.dim = width
        # MAE's initialisation: the patch projection as a linear layer (xavier), linear layers xavier, zero biases
        nn.init.xavier_uniform_(self.patch_embed.weight.view(width, -1))
        for m in self.blocks.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def embed(self, x: torch.Tensor) -> PatchEmbedding:
        """Images (B, C, H, W) → ``PatchEmbedding``; ``patches`` are the normalised pixels, ``(p q c)`` per patch."""
        self.check_input(x)
        if self.image_size is not None and tuple(x.shape[-2:]) != (self.image_size,) * 2:
            x = nn.functional.interpolate(x, size=(self.image_size,) * 2, mode="bilinear", align_corners=False,
                                          antialias=True)
        p = self.patch_size
        if x.shape[-2] % p or x.shape[-1] % p:
            raise ShapeError(f"vit: patch_size={p} must divide the image size {tuple(x.shape[-2:])}; set "
                             "encoder.image.image_size or patch_size")
        x = self.normalise(x)
        grid = (x.shape[-2] // p, x.shape[-1] // p)
        key = (grid, x.device)
        if key not in self._pos:
            self._pos[key] = sincos_2d(*grid, self.dim, x.device)[None]
        tokens = rearrange(self.patch_embed(x), "b d h w -> b (h w) d")
        patches = rearrange(x, "b c (h p) (w q) -> b (h w) (p q c)", p=p, q=p)
        return PatchEmbedding(tokens, self._pos[key].to(tokens.dtype), patches, grid)

    def transform(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, K, width) position-coded tokens (any subset of the patches) → (B, K, width) after the final LayerNorm."""
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)

    def encode(self, x: torch.Tensor) -> EncoderOutput:
        e = self.embed(x)
        tokens = self.transform(e.tokens + e.pos)
        return EncoderOutput(pooled=tokens.mean(dim=1), tokens=tokens)
