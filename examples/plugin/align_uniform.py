"""An mmssl plugin: one new objective in one file.

Alignment + uniformity (Wang & Isola 2020): ``L = E‖f(x)−f(x⁺)‖² + λ·log E exp(−2‖f(x)−f(y)‖²)`` on
L2-normalised embeddings of two augmented views. Use it with

    mmssl pretrain plugins=[align_uniform] objective=align_uniform objective.align_uniform.lam=0.5
"""

import torch
import torch.nn.functional as F

import mmssl


@mmssl.register_objective("align_uniform", modalities=("image", "audio", "obs"))
class AlignUniform(mmssl.Objective):
    """Alignment + uniformity of L2-normalised embeddings of two views (Wang & Isola 2020)."""

    def __init__(self, encoders, modality: str | None = None, lam: float = 1.0, augment: str | None = None):
        super().__init__(encoders, modality)
        self.lam = lam
        self.augment = self.build_augment(augment)

    def forward(self, batch, encoders):
        x = self.inputs(batch)
        z = F.normalize(encoders[self.modality](torch.cat([self.augment(x), self.augment(x)])).pooled, dim=-1)
        z1, z2 = z.chunk(2)
        align = (z1 - z2).pow(2).sum(-1).mean()
        # pdist has no bf16 kernel: under bf16 autocast (trainer.precision) the embeddings are bf16, the loss is fp32
        uniform = torch.pdist(z1.float()).pow(2).mul(-2).exp().mean().log()
        return mmssl.ObjectiveOutput(align + self.lam * uniform, {"align": align.item(), "uniform": uniform.item()})
