"""DINO: self-distillation with no labels (Caron et al. 2021), following the official ``main_dino.py``."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from mmssl.collectives import gather
from mmssl.encoders.base import Encoder
from mmssl.encoders.heads import mlp
from mmssl.errors import ConfigError
from mmssl.objectives.base import Objective, cosine_momentum, ema_update
from mmssl.objectives.contrastive import float32
from mmssl.objectives.views import build_multi_crop_augment, encode_views, make_views
from mmssl.registry import OBJECTIVES
from mmssl.types import Batch, ObjectiveOutput


class WeightNormLinear(nn.Module):
    """``x ↦ x·(g·v/‖v‖)ᵀ`` without bias, each output row of ``v`` (out, in) normalised (``weight_norm`` at dim 0).

    DINO's last layer; with ``norm_last_layer`` the gain g is fixed at 1, so outputs are cosines of the
    (unit) bottleneck features with ``out`` prototype directions. Written out rather than through
    ``torch.nn.utils.parametrizations`` so the state-dict keys (``weight_v``, ``weight_g``) are plain.
    """

    def __init__(self, in_dim: int, out_dim: int, train_gain: bool = False):
        super().__init__()
        self.weight_v = nn.Parameter(nn.Linear(in_dim, out_dim, bias=False).weight.detach().clone())
        self.weight_g = nn.Parameter(torch.ones(out_dim, 1), requires_grad=train_gain)

    def forward(self, x: torch.Tensor, freeze: bool = False) -> torch.Tensor:
        v = self.weight_v.detach() if freeze else self.weight_v
        g = self.weight_g.detach() if freeze else self.weight_g
        return F.linear(x, g * F.normalize(v, dim=1))


class DINOHead(nn.Module):
    """(N, D) → MLP (GELU; BatchNorm after each hidden layer with ``use_bn``) → bottleneck → L2 normalise →
    weight-normalised linear → (N, out_dim)."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int = 2048, bottleneck_dim: int = 256, layers: int = 3,
                 norm_last_layer: bool = True, use_bn: bool = False):
        super().__init__()
        self.mlp = mlp(in_dim, hidden_dim, bottleneck_dim, layers, batch_norm=use_bn, activation=nn.GELU)
        for m in self.mlp.modules():  # the official init: truncated normal (std 0.02), zero bias
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        self.last_layer = WeightNormLinear(bottleneck_dim, out_dim, train_gain=not norm_last_layer)

    def forward(self, x: torch.Tensor, freeze_last_layer: bool = False) -> torch.Tensor:
        return self.last_layer(F.normalize(self.mlp(x), dim=-1), freeze=freeze_last_layer)


@float32
def dino_loss(student: torch.Tensor, teacher: torch.Tensor, center: torch.Tensor, student_temp: float,
              teacher_temp: float) -> tuple[torch.Tensor, torch.Tensor]:
    """DINO's cross-entropy between teacher and student distributions over views.

    ``student`` (V, B, K) logits of all V views, ``teacher`` (G, B, K) logits of the G global views (the
    first G student views), ``center`` (K,). With ``P_t = softmax((t - c)/τ_t)`` (centring + sharpening)
    and ``P_s = softmax(s/τ_s)``: ``L = mean over pairs (g, v), v ≠ g, of mean_b Σ_k -P_t[g,b,k]·log P_s[v,b,k]``,
    pairs where student and teacher see the same view skipped. Returns (loss, mean teacher entropy).
    """
    g, v = teacher.shape[0], student.shape[0]
    log_p = F.log_softmax(student / student_temp, dim=-1)
    q = F.softmax((teacher - center) / teacher_temp, dim=-1)
    cross = -torch.einsum("gbk,vbk->gv", q, log_p) / student.shape[1]  # (G, V) mean CE per view pair
    keep = ~torch.eye(g, v, dtype=torch.bool, device=student.device)
    entropy = -(q * torch.log(q.clamp_min(1e-12))).sum(-1).mean()
    return cross[keep].mean(), entropy


@OBJECTIVES.register("dino", modalities=("image", "audio", "obs"))
class DINO(Objective):
    """DINO: a student matches an EMA teacher's centred, sharpened output over multi-crop views (Caron et al. 2021).

    ``L = Σ_{g∈global} Σ_{v≠g} H(P_t(x_g), P_s(x_v)) / #pairs`` with ``P_t = softmax((h_t(x) - c)/τ_t)``,
    ``P_s = softmax(h_s(x)/τ_s)`` (see ``dino_loss``). The teacher sees the 2 global views, the student
    all views (2 global + the augmentation's local crops, ``multi_crop``). After each step: teacher
    ``θ_t ← m·θ_t + (1-m)·θ_s`` with m rising from ``momentum`` to 1 (cosine); centre
    ``c ← λ·c + (1-λ)·mean(teacher outputs of the global batch)`` (λ = ``center_momentum``, gathered over
    ranks); τ_t rises linearly from ``warmup_teacher_temp`` to ``teacher_temp`` over
    ``warmup_teacher_temp_steps`` (the official schedule counts epochs; here optimiser steps). The head is
    DINO's (GELU MLP, bottleneck, L2 norm, weight-normalised last layer with gain fixed to 1 under
    ``norm_last_layer``); its last layer gets no gradient for the first ``freeze_last_layer_steps``.
    Defaults are ``main_dino.py``'s (out_dim 65536, τ_s 0.1, τ_t 0.04, m 0.996, λ 0.9). The centre, the
    step counter and the teacher are buffers/parameters of this module, so a resumed run continues
    exactly. Follows the official code where the paper is silent: the per-view-pair loss average and the
    GELU head, without BatchNorm unless ``use_bn_in_head`` (``main_dino.py --use_bn_in_head``, off there
    for ViTs; solo-learn's head has it on). Conv encoders want it: their ReLU-pooled features share a large
    common component (mean cosine between the digits of a random width-16 conv net: 0.73), the centre
    subtracts what the head maps it to, and the teacher starts, and stays, near the uniform distribution
    (entropy → log K); BatchNorm in the head removes that component (experiments/objectives/README.md). The
    official per-view blur/solarisation asymmetry of the global crops is not reproduced (all views share
    one augmentation pipeline).
    """

    def __init__(self, encoders: Mapping[str, Encoder], modality: str | None = None, out_dim: int = 65536,
                 hidden_dim: int = 2048, bottleneck_dim: int = 256, norm_last_layer: bool = True,
                 student_temp: float = 0.1, teacher_temp: float = 0.04, warmup_teacher_temp: float = 0.04,
                 warmup_teacher_temp_steps: int = 0, center_momentum: float = 0.9, momentum: float = 0.996,
                 freeze_last_layer_steps: int = 0, use_bn_in_head: bool = False, augment: str | None = None,
                 augment_kwargs: dict | None = None, multi_crop: dict | None = None):
        super().__init__(encoders, modality)
        for key, value in (("student_temp", student_temp), ("teacher_temp", teacher_temp),
                           ("warmup_teacher_temp", warmup_teacher_temp)):
            if value <= 0:
                raise ConfigError(f"dino {key} must be positive, got {value}")
        for key, value in (("momentum", momentum), ("center_momentum", center_momentum)):
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"dino {key} must be in [0, 1], got {value}")
        if warmup_teacher_temp_steps < 0 or freeze_last_layer_steps < 0:
            raise ConfigError("dino warmup_teacher_temp_steps and freeze_last_layer_steps must be ≥ 0")
        self.student_temp, self.teacher_temp, self.warmup_teacher_temp = student_temp, teacher_temp, warmup_teacher_temp
        self.warmup_teacher_temp_steps, self.freeze_last_layer_steps = warmup_teacher_temp_steps, freeze_last_layer_steps
        self.center_momentum, self.base_momentum, self.momentum = center_momentum, momentum, momentum
        encoder = encoders[self.modality]
        self.head = DINOHead(encoder.dim, out_dim, hidden_dim, bottleneck_dim, norm_last_layer=norm_last_layer,
                             use_bn=use_bn_in_head)
        self.teacher_encoder = self.momentum_copy(encoder)
        self.teacher_head = self.momentum_copy(self.head)
        self.augment = build_multi_crop_augment(self, augment, augment_kwargs, multi_crop)
        self.register_buffer("center", torch.zeros(out_dim))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self._pending_center: torch.Tensor | None = None

    def teacher_temperature(self) -> float:
        """τ_t at the current step: linear warm-up reaching ``teacher_temp`` at step ``warmup_teacher_temp_steps``,
        then constant (main_dino.py's per-epoch ``np.linspace`` reaches it one epoch earlier, at index n - 1)."""
        if self.warmup_teacher_temp_steps == 0:
            return self.teacher_temp
        frac = min(1.0, int(self.step) / self.warmup_teacher_temp_steps)
        return self.warmup_teacher_temp + frac * (self.teacher_temp - self.warmup_teacher_temp)

    def forward(self, batch: Batch, encoders: Mapping[str, Encoder]) -> ObjectiveOutput:
        x = self.inputs(batch)
        b = len(x)
        views = make_views(self.augment, x, 2)
        frozen = int(self.step) < self.freeze_last_layer_steps
        student = self.head(encode_views(encoders[self.modality], views), freeze_last_layer=frozen)
        with torch.no_grad():
            teacher = self.teacher_head(encode_views(self.teacher_encoder, views[:2])).float()
        temp = self.teacher_temperature()
        loss, entropy = dino_loss(student.view(len(views), b, -1), teacher.view(2, b, -1), self.center,
                                  self.student_temp, temp)
        if self.training:  # the centre moves after the step, with the global batch's mean teacher output
            self._pending_center = gather(teacher).mean(0)
        return ObjectiveOutput(loss, {"teacher_temperature": temp, "teacher_entropy": entropy.item(),
                                      "momentum": self.momentum})

    def after_step(self, encoders: Mapping[str, Encoder], progress: float) -> None:
        self.momentum = cosine_momentum(self.base_momentum, progress)
        ema_update(self.teacher_encoder, encoders[self.modality], self.momentum)
        ema_update(self.teacher_head, self.head, self.momentum)
        if self._pending_center is not None:
            self.center.mul_(self.center_momentum).add_(self._pending_center.to(self.center), alpha=1 - self.center_momentum)
            self._pending_center = None
        self.step += 1
