"""I-JEPA: predict an EMA target encoder's patch representations of masked blocks from a context block."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mmssl.encoders.base import Encoder
from mmssl.encoders.vit import require_patch_encoder, sincos_2d
from mmssl.errors import ConfigError
from mmssl.objectives.base import Objective, ema_update
from mmssl.objectives.mae import at_least_float32, blocks, take
from mmssl.registry import OBJECTIVES
from mmssl.types import Batch, ObjectiveOutput


def block_size(rows: int, cols: int, scale: Sequence[float], aspect: Sequence[float]) -> tuple[int, int]:
    """One (h, w) block size as the official ``MaskCollator._sample_block_size`` (src/masks/multiblock.py): a
    single ``u ~ U(0,1)`` sets both the scale ``s = s₀ + u(s₁ - s₀)`` and the aspect ``a = a₀ + u(a₁ - a₀)``
    (linear in u as the official code, not BEiT's log-uniform aspect); ``h = round(√(⌊s·rows·cols⌋·a))``,
    ``w = round(√(⌊s·rows·cols⌋/a))``, both kept in [1, grid - 1]."""
    u = torch.rand(1).item()
    keep = int(rows * cols * (scale[0] + u * (scale[1] - scale[0])))
    a = aspect[0] + u * (aspect[1] - aspect[0])
    h, w = int(round(math.sqrt(keep * a))), int(round(math.sqrt(keep / a)))
    return max(1, min(h, rows - 1)), max(1, min(w, cols - 1))


def _boxes(shape: tuple[int, ...], rows: int, cols: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``shape`` independent h×w rectangles at uniformly random positions on a (rows, cols) grid:
    ``(masks (*shape, rows·cols) bool, indices (*shape, h·w) long, row-major and ascending)``."""
    top = torch.randint(0, rows - h + 1, shape)
    left = torch.randint(0, cols - w + 1, shape)
    r, c = torch.arange(rows), torch.arange(cols)
    in_rows = (r >= top[..., None]) & (r < top[..., None] + h)  # (*shape, rows)
    in_cols = (c >= left[..., None]) & (c < left[..., None] + w)  # (*shape, cols)
    masks = (in_rows[..., :, None] & in_cols[..., None, :]).flatten(-2)
    cells = (torch.arange(h)[:, None] * cols + torch.arange(w)[None, :]).flatten()  # offsets inside the box
    return masks, (top * cols + left)[..., None] + cells


def multi_block_masks(batch: int, grid: tuple[int, int], num_targets: int = 4,
                      target_scale: Sequence[float] = (0.15, 0.2), target_aspect: Sequence[float] = (0.75, 1.5),
                      context_scale: Sequence[float] = (0.85, 1.0), min_keep: int = 4,
                      tries: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """I-JEPA's multi-block masking (Assran et al. 2023, the official ``MaskCollator``) on a (rows, cols) grid.

    One target size and one context size (aspect 1) are drawn per batch; per sample, ``num_targets``
    target blocks at random positions, then a context block from which every target patch is removed
    (no overlap); a draw whose context keeps fewer than ``min_keep`` patches is redrawn (up to ``tries``
    draws, made at once). As in the official collator the context index lists are cut to the shortest
    in the batch (keeping the first, in patch order). Returns ``context`` (B, Kc) and ``targets``
    (num_targets, B, Kt) long patch indices (row-major). Unlike the official ``randint(0, rows - h)``, a
    block may touch the last row and column.
    """
    rows, cols = grid
    th, tw = block_size(rows, cols, target_scale, target_aspect)
    ch, cw = block_size(rows, cols, context_scale, (1.0, 1.0))
    target_masks, target_idx = _boxes((tries, batch, num_targets), rows, cols, th, tw)
    context, _ = _boxes((tries, batch), rows, cols, ch, cw)
    context = context & ~target_masks.any(2)  # (tries, B, N)
    valid = context.sum(-1) >= min_keep  # (tries, B)
    if not valid.any(0).all():
        raise ConfigError(f"ijepa: {num_targets} target blocks of {th}×{tw} leave fewer than min_keep={min_keep} "
                          f"context patches on a {rows}×{cols} grid; lower num_targets, target_scale or min_keep")
    pick = valid.int().argmax(0)  # the first valid draw of each sample
    samples = torch.arange(batch)
    context, target_idx = context[pick, samples], target_idx[pick, samples]  # (B, N), (B, M, Kt)
    kc = int(context.sum(-1).min())
    # True positions first, each group in ascending patch order (a stable sort)
    order = torch.sort((~context).int(), dim=1, stable=True).indices
    return order[:, :kc], target_idx.transpose(0, 1).contiguous()


@OBJECTIVES.register("ijepa", modalities=("image", "audio"))
class IJEPA(Objective):
    """I-JEPA: from a context block, predict the target encoder's representations of masked target blocks (Assran et al. 2023).

    Masks from ``multi_block_masks``. The context encoder f_θ runs on the context patches only,
    ``s_x = f_θ(x_ctx + pos_ctx)``; the EMA target encoder f_θ̄ runs on every patch, its output
    LayerNorm-ed again without affine (as the official code), ``s_y = LN(f_θ̄(x))``; a narrow predictor
    g_φ (linear to ``predictor_width``, + fixed sin/cos positions, mask tokens at each target block's
    positions, ``predictor_depth`` blocks, LayerNorm, linear back) predicts each block, and

        L = mean over blocks i, patches j ∈ B_i, features of smooth_L1(ŝ_yj, s_yj)   (β = 1)

    — the paper writes an L2 distance, the official code uses ``F.smooth_l1_loss``; this follows the code.
    Target weights ``θ̄ ← τθ̄ + (1-τ)θ`` after every step, τ linear from ``momentum`` to ``momentum_end``
    over training (the official schedule is linear too, stretched by ``ipe_scale``). On spectrogram
    patch grids (many time steps × few bands) the square context block covers only part of the clip;
    audio-specific (time-frequency) masking as in A-JEPA is not implemented.
    """

    def __init__(self, encoders: Mapping[str, Encoder], modality: str | None = None, predictor_width: int = 32,
                 predictor_depth: int = 2, predictor_heads: int = 4, num_targets: int = 4,
                 target_scale: list[float] = (0.15, 0.2), target_aspect: list[float] = (0.75, 1.5),
                 context_scale: list[float] = (0.85, 1.0), min_keep: int = 4, momentum: float = 0.996,
                 momentum_end: float = 1.0, augment: str | None = "identity", augment_kwargs: dict | None = None):
        super().__init__(encoders, modality)
        if not 0.0 <= momentum <= momentum_end <= 1.0:
            raise ConfigError(f"ijepa needs 0 ≤ momentum ≤ momentum_end ≤ 1, got {momentum}, {momentum_end}")
        if num_targets < 1:
            raise ConfigError(f"ijepa num_targets must be ≥ 1, got {num_targets}")
        encoder = encoders[self.modality]
        require_patch_encoder(encoder, "ijepa")
        self.masking = dict(num_targets=num_targets, target_scale=tuple(target_scale),
                            target_aspect=tuple(target_aspect), context_scale=tuple(context_scale), min_keep=min_keep)
        self.base_momentum, self.momentum_end, self.momentum = momentum, momentum_end, momentum
        self.predictor_embed = nn.Linear(encoder.dim, predictor_width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, predictor_width))
        nn.init.normal_(self.mask_token, std=0.02)
        self.predictor_blocks = blocks(predictor_width, predictor_depth, predictor_heads)
        self.predictor_norm = nn.LayerNorm(predictor_width)
        self.predictor_proj = nn.Linear(predictor_width, encoder.dim)
        self.target_encoder = self.momentum_copy(encoder)
        self.augment = self.build_augment(augment, augment_kwargs)

    def predict(self, context: torch.Tensor, context_idx: torch.Tensor, target_idx: torch.Tensor,
                grid: tuple[int, int]) -> torch.Tensor:
        """(B, Kc, D) context latents, (B, Kc) and (M, B, Kt) indices → (M·B, Kt, D) predictions, block-major."""
        m, b, kt = target_idx.shape
        x = self.predictor_embed(context)
        pos = sincos_2d(*grid, x.shape[-1], x.device).to(x.dtype)[None].expand(b, -1, -1)
        x = (x + take(pos, context_idx)).repeat(m, 1, 1)  # (M·B, Kc, Dp)
        queries = self.mask_token.to(x.dtype) + take(pos.repeat(m, 1, 1), target_idx.reshape(m * b, kt))
        x = torch.cat([x, queries], dim=1)
        for block in self.predictor_blocks:
            x = block(x)
        return self.predictor_proj(self.predictor_norm(x[:, -kt:]))

    def forward(self, batch: Batch, encoders: Mapping[str, Encoder]) -> ObjectiveOutput:
        encoder = encoders[self.modality]
        x = self.augment(self.inputs(batch))
        e = encoder.embed(x)
        context_idx, target_idx = multi_block_masks(len(x), e.grid, **self.masking)
        context_idx, target_idx = context_idx.to(x.device), target_idx.to(x.device)
        m, b, kt = target_idx.shape
        with torch.no_grad():
            t = self.target_encoder.embed(x)
            h = at_least_float32(self.target_encoder.transform(t.tokens + t.pos))
            h = F.layer_norm(h, (h.shape[-1],))
            targets = take(h.repeat(m, 1, 1), target_idx.reshape(m * b, kt))  # (M·B, Kt, D)
        context = encoder.transform(take(e.tokens + e.pos, context_idx))  # the context encoder sees the context only
        pred = self.predict(context, context_idx, target_idx, e.grid)
        loss = F.smooth_l1_loss(at_least_float32(pred), targets)
        n = e.tokens.shape[1]
        return ObjectiveOutput(loss, {"context_fraction": context_idx.shape[1] / n,
                                      "target_fraction": kt / n, "momentum": self.momentum})

    def after_step(self, encoders: Mapping[str, Encoder], progress: float) -> None:
        # τ depends on progress only, so a resumed run needs no extra state to continue exactly
        self.momentum = self.base_momentum + (self.momentum_end - self.base_momentum) * min(1.0, progress)
        ema_update(self.target_encoder, encoders[self.modality], self.momentum)
