"""data2vec: regress the EMA teacher's averaged top-K layer outputs at masked positions, for images, audio and text."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping

import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock
from torch import nn

from mmssl.encoders.base import Encoder
from mmssl.encoders.vit import require_patch_encoder
from mmssl.errors import ConfigError
from mmssl.objectives.base import Objective, ema_update
from mmssl.objectives.mae import at_least_float32
from mmssl.objectives.predictive import BertMasking, random_token_mask
from mmssl.registry import OBJECTIVES
from mmssl.types import Batch, ObjectiveOutput


def ffn_modules(encoder: nn.Module) -> list[nn.Module]:
    """The feed-forward sub-module of every transformer block of ``encoder``, in depth order: its output is
    the FFN branch before the block's last residual add (``linear2`` of a torch ``TransformerEncoderLayer``,
    ``mlp`` of an open_clip ``ResidualAttentionBlock``)."""
    found = []
    for module in encoder.modules():
        if isinstance(module, nn.TransformerEncoderLayer):
            found.append(module.linear2)
        elif isinstance(module, ResidualAttentionBlock):
            found.append(module.mlp)
    return found


@contextlib.contextmanager
def ffn_outputs(encoder: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Collect every block's FFN output (B, N, D) during the forward passes inside the ``with``."""
    outputs: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: outputs.append(out)) for m in ffn_modules(encoder)]
    # torch's fused encoder-layer fast path (eval mode, no grad) skips the sub-modules and hence the hooks
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield outputs
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        for h in hooks:
            h.remove()


def instance_norm_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, N, D) → each feature standardised over the N positions of its sample (``F.instance_norm`` on (B, D, N))."""
    return F.instance_norm(at_least_float32(x).transpose(1, 2)).transpose(1, 2)


def data2vec_targets(layers: list[torch.Tensor], top_k: int, instance_norm: bool = True) -> torch.Tensor:
    """``y = (1/K) Σ_{l ∈ top K} IN(a_l)`` from per-block FFN outputs ``a_l`` (B, N, D), as the official
    ``instance_norm_target_layer`` path (no normalisation of the average afterwards)."""
    chosen = layers[-top_k:]
    if instance_norm:
        chosen = [instance_norm_tokens(a) for a in chosen]
    return sum(at_least_float32(a) for a in chosen) / len(chosen)


def regression_loss(pred: torch.Tensor, target: torch.Tensor, beta: float) -> torch.Tensor:
    """Official data2vec loss on (M, D) masked positions: ``mean_M Σ_D ℓ(x, y) / √D``; ℓ is the squared
    error for ``beta = 0`` and smooth-L1 with that β otherwise."""
    pred, target = at_least_float32(pred), at_least_float32(target)
    if beta == 0:
        per = F.mse_loss(pred, target, reduction="none")
    else:
        per = F.smooth_l1_loss(pred, target, reduction="none", beta=beta)
    return per.sum(-1).mean() / math.sqrt(pred.shape[-1])


@OBJECTIVES.register("data2vec", modalities=("image", "audio", "text"))
class Data2Vec(Objective):
    """data2vec: regress the EMA teacher's average of its top-K layer outputs at masked positions (Baevski et al. 2022).

    The teacher f_θ̄ (an EMA copy of the encoder, eval mode, no gradient) reads the unmasked input; the
    targets at every position are ``y = (1/K) Σ_{l=L-K+1..L} IN(a_l)`` where ``a_l`` is block l's FFN
    output before its last residual add and IN the instance norm over positions (the official
    ``instance_norm_target_layer``). The student f_θ reads the masked input — image/spectrogram patches
    with a learnt mask embedding in place of the masked patch embeddings (``mask_ratio`` random patches;
    data2vec's block-wise image masking and span masking for speech are not used), text with BERT's
    80/10/10 corruption of ``mask_prob`` of the ordinary tokens (``BertMasking``) — and a linear head
    regresses y at the masked positions M:

        L = (1/|M|) Σ_{i∈M} Σ_d ℓ(h(f_θ(x̃))_id, y_id) / √D,   ℓ = squared error (``loss_beta = 0``) or smooth-L1_β

    (the 1/√D scale is the official code's default ``loss_scale``). ``θ̄ ← τθ̄ + (1-τ)θ`` after each
    step with τ linear from ``momentum`` to ``momentum_end`` over training (the official anneal is linear
    over ``ema_anneal_end_step``). The official code shares the feature extractor with the teacher
    (``ema_transformer_only``); here the whole encoder is averaged. Defaults: τ 0.999 → 0.9999, instance-
    normalised targets, β = 0 as the official speech/text configs; ``top_k`` 3 where those average the top 8
    of 12 blocks (``average_top_k_layers``) — the same top two thirds of ``vit_tiny``'s 4 blocks.
    """

    def __init__(self, encoders: Mapping[str, Encoder], modality: str | None = None, top_k: int = 3,
                 mask_ratio: float = 0.6, mask_prob: float = 0.15, momentum: float = 0.999,
                 momentum_end: float = 0.9999, loss_beta: float = 0.0, instance_norm: bool = True,
                 vocab_size: int = 49408, mask_id: int | None = None, pad_id: int = 0,
                 special_ids: list[int] = (49406, 49407), augment: str | None = "identity",
                 augment_kwargs: dict | None = None):
        super().__init__(encoders, modality)
        encoder = encoders[self.modality]
        if not 0.0 < mask_ratio < 1.0 or not 0.0 < mask_prob < 1.0:
            raise ConfigError(f"data2vec mask_ratio and mask_prob must be in (0, 1), got {mask_ratio}, {mask_prob}")
        if not 0.0 <= momentum <= momentum_end <= 1.0:
            raise ConfigError(f"data2vec needs 0 ≤ momentum ≤ momentum_end ≤ 1, got {momentum}, {momentum_end}")
        ffns = ffn_modules(encoder)
        if not ffns:
            raise ConfigError(f"data2vec reads the teacher's transformer blocks, but {type(encoder).__name__} has none; "
                              "use a transformer encoder (vit, open_clip_vision, audio_transformer, text_transformer, "
                              "open_clip_text)")
        if not 1 <= top_k <= len(ffns):
            raise ConfigError(f"data2vec top_k={top_k} must be in [1, {len(ffns)}] (the encoder's depth)")
        self.patches = self.modality != "text"
        if self.patches:
            require_patch_encoder(encoder, "data2vec")
            self.mask_token = nn.Parameter(torch.zeros(1, 1, getattr(encoder, "token_width", encoder.dim)))
            nn.init.normal_(self.mask_token, std=0.02)
        else:
            mask_id = mask_id if mask_id is not None else int(getattr(encoder, "mask_token_id", pad_id))
            self.masking = BertMasking(vocab_size, mask_prob, mask_id, pad_id, special_ids)
        width = ffns[-1].out_features if isinstance(ffns[-1], nn.Linear) else ffns[-1].c_proj.out_features
        self.top_k, self.mask_ratio, self.mask_prob, self.loss_beta = top_k, mask_ratio, mask_prob, loss_beta
        self.instance_norm = instance_norm
        self.base_momentum, self.momentum_end, self.momentum = momentum, momentum_end, momentum
        self.head = nn.Linear(encoder.dim, width)
        self.target_encoder = self.momentum_copy(encoder)
        self.augment = self.build_augment(augment, augment_kwargs)

    # -- students' inputs ----------------------------------------------------------------------------
    def student(self, x: torch.Tensor, encoder: Encoder) -> tuple[torch.Tensor, torch.Tensor]:
        """The student's output tokens (B, N, D) on the masked input and the mask (B, N) bool."""
        if not self.patches:
            corrupted, chosen = self.masking(x.long())
            return encoder(corrupted).tokens, chosen
        e = encoder.embed(x)
        b, n, _ = e.tokens.shape
        mask = random_token_mask(b, n, self.mask_ratio, e.tokens.device)
        tokens = torch.where(mask[..., None], self.mask_token.to(e.tokens.dtype), e.tokens)
        return encoder.transform(tokens + e.pos), mask

    @torch.no_grad()
    def targets(self, x: torch.Tensor, n: int) -> torch.Tensor:
        """The teacher's (B, n, D) regression targets on the unmasked input (see the class docstring)."""
        was_training = self.target_encoder.training
        self.target_encoder.eval()  # the official teacher runs without dropout
        with ffn_outputs(self.target_encoder) as layers:
            self.target_encoder(x)
        self.target_encoder.train(was_training)
        # extra positions: a class token in front (open_clip_vision) or padding up to the context length (open_clip_text)
        layers = [a[:, a.shape[1] - n:] for a in layers] if self.patches else [a[:, :n] for a in layers]
        return data2vec_targets(layers, self.top_k, self.instance_norm)

    def forward(self, batch: Batch, encoders: Mapping[str, Encoder]) -> ObjectiveOutput:
        encoder = encoders[self.modality]
        x = self.augment(self.inputs(batch))
        tokens, mask = self.student(x, encoder)
        y = self.targets(x, tokens.shape[1])
        loss = regression_loss(self.head(tokens[mask]), y[mask], self.loss_beta)
        return ObjectiveOutput(loss, {"masked_fraction": mask.float().mean().item(), "target_std": y[mask].std().item(),
                                      "momentum": self.momentum})

    def after_step(self, encoders: Mapping[str, Encoder], progress: float) -> None:
        # τ depends on progress only, so a resumed run needs no extra state to continue exactly
        self.momentum = self.base_momentum + (self.momentum_end - self.base_momentum) * min(1.0, progress)
        ema_update(self.target_encoder, encoders[self.modality], self.momentum)
