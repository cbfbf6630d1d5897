"""Small MLP heads (projectors, predictors, classifiers) shared by objectives and agents."""

from __future__ import annotations

from torch import nn


def mlp(in_dim: int, hidden_dim: int, out_dim: int, layers: int = 2, batch_norm: bool = True,
        last_batch_norm: bool = False, activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """``layers`` linear layers ``in → hidden → … → out`` with optional BatchNorm and activation between.

    ``layers=1`` is a single linear map. ``last_batch_norm`` adds an affine-free BatchNorm on the output
    (as in SimSiam's and MoCo v3's projectors).
    """
    if layers < 1:
        raise ValueError(f"an MLP needs at least one layer, got layers={layers}")
    modules: list[nn.Module] = []
    dims = [in_dim] + [hidden_dim] * (layers - 1) + [out_dim]
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        last = i == layers - 1
        modules.append(nn.Linear(a, b, bias=not (batch_norm and not last)))
        if not last:
            if batch_norm:
                modules.append(nn.BatchNorm1d(b))
            modules.append(activation())
    if last_batch_norm:
        modules.append(nn.BatchNorm1d(out_dim, affine=False))
    return nn.Sequential(*modules)
