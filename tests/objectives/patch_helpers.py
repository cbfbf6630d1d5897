"""Shared by the MAE, I-JEPA and data2vec tests: tiny patch encoders, a transform recorder, a parameter gradcheck."""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from mmssl.registry import ENCODERS
from mmssl.types import Batch


def vit_encoders(width: int = 16, depth: int = 2, **kw) -> nn.ModuleDict:
    return nn.ModuleDict({"image": ENCODERS.build("vit", width=width, depth=depth, heads=2, **kw)})


def audio_encoders(depth: int = 1) -> nn.ModuleDict:
    return nn.ModuleDict({"audio": ENCODERS.build("audio_transformer", sample_rate=8000, n_mels=16, dim=16,
                                                  depth=depth, heads=2, patch_frames=4, patch_mels=8)})


def record_transform(encoder) -> list[torch.Tensor]:
    """Keep every input the encoder's ``transform`` sees."""
    seen, inner = [], encoder.transform

    def transform(tokens):
        seen.append(tokens.detach().clone())
        return inner(tokens)

    encoder.transform = transform
    return seen


class _Loss(nn.Module):
    def __init__(self, encoders, objective, modality):
        super().__init__()
        self.encoders, self.objective, self.modality = encoders, objective, modality

    def forward(self, x, seed):
        torch.manual_seed(seed)  # the same masks at every evaluation
        return self.objective(Batch({self.modality: x}), self.encoders).loss


def param_gradcheck(encoders, objective, x, names, seed: int = 3) -> bool:
    """``torch.autograd.gradcheck`` of the loss in float64 with respect to the named parameters of
    ``{encoders, objective}`` (parameters, not the input: the targets are detached functions of the input)."""
    model = _Loss(encoders, objective, objective.modality).double()
    x = x.double() if x.is_floating_point() else x
    params = dict(model.named_parameters())
    inputs = tuple(params[n].detach().clone().requires_grad_(True) for n in names)

    def f(*ws):
        return functional_call(model, dict(zip(names, ws)), (x, seed))

    try:
        return torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-5)
    finally:
        model.float()
