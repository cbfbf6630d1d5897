"""Building blocks of `mmssl finetune`: labelled subsets, encoder units (freezing, layer-wise LR decay),
FixMatch pseudo-labels and the classifier (dataset adaptation for transfer: ``mmssl.data.adapt``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mmssl.data.base import ArrayDataset, iterate
from mmssl.encoders.heads import mlp
from mmssl.errors import ConfigError, DataError


# -- labelled subset --------------------------------------------------------------------------------
def balanced_subset(labels: torch.Tensor, amount: float | int, seed: int,
                    class_names: list[str] | None = None) -> list[torch.Tensor]:
    """Per-class index tensors of a class-balanced labelled subset of ``labels`` (N,), fixed by ``seed``.

    ``amount`` a float in (0, 1]: ``round(amount · n_c)`` items of every class c (class proportions kept);
    an int ≥ 1: exactly ``amount`` items per class. Raises a one-line ``DataError`` when that leaves a
    class without labelled items or asks for more than a class has.
    """
    per_class = _per_class_count(amount)
    g = torch.Generator().manual_seed(int(seed))
    num_classes = len(class_names) if class_names else int(labels.max()) + 1
    chosen = []
    for c in range(num_classes):
        idx = torch.nonzero(labels == c).flatten()
        name = class_names[c] if class_names else str(c)
        k = per_class if isinstance(per_class, int) else math.floor(per_class * len(idx) + 0.5)
        if len(idx) == 0:
            raise DataError(f"class {name!r} has no training items, so no labelled subset can cover it; "
                            "check the dataset's labels")
        if k == 0:
            raise DataError(f"labels={amount} leaves class {name!r} empty ({len(idx)} training items × {amount} "
                            f"rounds to 0); use labels≥{0.5 / len(idx):.3g} or a per-class count such as labels=1")
        if k > len(idx):
            raise DataError(f"labels={amount} asks for {k} items of class {name!r}, which has only {len(idx)}; "
                            f"use labels≤{len(idx)} or a fraction such as labels=0.1")
        chosen.append(idx[torch.randperm(len(idx), generator=g)[:k]])
    return chosen


def grouped_subset(labels: torch.Tensor, groups: list[str], amount: float | int, seed: int,
                   class_names: list[str] | None = None) -> list[torch.Tensor]:
    """Per-class indices of a labelled subset drawn within every group (speaker, writer): ``amount`` items
    of each class from each group that has it (a fraction: of that group's items of the class), so
    every group is represented. Fixed by ``seed``; a class no group yields raises ``DataError``."""
    per_class = _per_class_count(amount)
    g = torch.Generator().manual_seed(int(seed))
    num_classes = len(class_names) if class_names else int(labels.max()) + 1
    chosen: list[list[torch.Tensor]] = [[] for _ in range(num_classes)]
    for group in sorted(set(groups)):
        in_group = torch.tensor([x == group for x in groups])
        for c in range(num_classes):
            idx = torch.nonzero(in_group & (labels == c)).flatten()
            k = per_class if isinstance(per_class, int) else math.floor(per_class * len(idx) + 0.5)
            if len(idx) and k:
                chosen[c].append(idx[torch.randperm(len(idx), generator=g)[:min(k, len(idx))]])
    for c, parts in enumerate(chosen):
        if not parts:
            name = class_names[c] if class_names else str(c)
            raise DataError(f"labels={amount} per group leaves class {name!r} without labelled items; "
                            "use a larger fraction or a per-class count such as labels=1")
    return [torch.cat(parts) for parts in chosen]


def _per_class_count(amount) -> float | int:
    if isinstance(amount, bool) or not isinstance(amount, int | float):
        raise ConfigError(f"labels must be a fraction in (0, 1] or a per-class count ≥ 1, got {amount!r}")
    if isinstance(amount, float) and 0 < amount <= 1:
        return amount
    if amount >= 1 and float(amount).is_integer():
        return int(amount)
    raise ConfigError(f"labels must be a fraction in (0, 1] or a per-class count ≥ 1, got {amount!r}")


def carve_validation(per_class: list[torch.Tensor], val_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, val) indices: ``floor(val_fraction · k_c)`` of every class's k_c labelled items go to validation,
    always leaving at least one for training (so tiny subsets have no validation split at all)."""
    if not 0 <= val_fraction < 1:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
    train, val = [], []
    for idx in per_class:
        n_val = min(math.floor(val_fraction * len(idx)), len(idx) - 1)
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return torch.cat(train).sort().values, torch.cat(val).sort().values


# -- encoder units, freezing and layer-wise LR decay ------------------------------------------------
@dataclass
class Unit:
    """One parameterised stage of an encoder: its dotted name, module (None for loose parameters), parameters."""

    name: str
    module: nn.Module | None
    params: list[nn.Parameter]


def _param_children(module: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, c) for n, c in module.named_children() if any(True for _ in c.parameters())]


def _unwrap(module: nn.Module, prefix: str) -> tuple[nn.Module, str]:
    """Follow wrappers (no own parameters, exactly one parameterised child) down to the first branching module."""
    while not list(module.parameters(recurse=False)):
        kids = _param_children(module)
        if len(kids) != 1:
            break
        prefix, module = f"{prefix}{kids[0][0]}.", kids[0][1]
    return module, prefix


def layer_units(encoder: nn.Module) -> list[Unit]:
    """The encoder's parameterised stages, ordered input → output, found generically.

    Descend through wrappers to the first module with several parameterised children; each child is one
    unit, except that a child which only wraps a stack (``ModuleList``/``Sequential``, e.g. a ViT's
    ``transformer.resblocks``) contributes each block. That module's own parameters (class and position
    embeddings) form the first unit, except 2-D ones named ``proj`` (a ViT's output projection), the last.
    ConvNet → its three stages; ResNet-18 → conv1, bn1, layer1…layer4; open_clip ViT → embeddings, conv1,
    ln_pre, each residual block, ln_post, proj. Every parameter lands in exactly one unit.
    """
    root, prefix = _unwrap(encoder, "")
    own = list(root.named_parameters(recurse=False))
    first = [p for n, p in own if not (n == "proj" and p.ndim == 2)]
    last = [p for n, p in own if n == "proj" and p.ndim == 2]
    units = [Unit(f"{prefix}<embeddings>", None, first)] if first else []
    for name, child in _param_children(root):
        inner, inner_prefix = _unwrap(child, f"{prefix}{name}.")
        if inner is not child and isinstance(inner, nn.ModuleList | nn.Sequential) and len(_param_children(inner)) > 1:
            units += [Unit(f"{inner_prefix}{n}", block, list(block.parameters())) for n, block in _param_children(inner)]
        else:
            units.append(Unit(f"{prefix}{name}", child, list(child.parameters())))
    if last:
        units.append(Unit(f"{prefix}proj", None, last))
    return units


def trainable_units(units: list[Unit], mode: str, unfreeze_last: int) -> list[bool]:
    """Which units train: none (frozen), the last ``unfreeze_last`` (partial), or all (full, semi)."""
    if mode == "frozen":
        return [False] * len(units)
    if mode == "partial":
        if not 1 <= unfreeze_last <= len(units):
            raise ConfigError(f"unfreeze_last must be in [1, {len(units)}] (the encoder has {len(units)} "
                              f"parameterised units: {', '.join(u.name for u in units)}), got {unfreeze_last}")
        return [i >= len(units) - unfreeze_last for i in range(len(units))]
    return [True] * len(units)


def param_groups(units: list[Unit], trains: list[bool], head: nn.Module, lr: float, weight_decay: float,
                 layer_decay: float | None = None, head_lr: float | None = None,
                 extra: nn.Module | None = None) -> list[dict]:
    """AdamW groups with layer-wise LR decay (BEiT, Bao et al. 2022; ELECTRA, Clark et al. 2020).

    The head trains at ``head_lr`` (default ``lr``); the encoder unit k places below the output
    (k = 1 for the last unit) at ``lr · layer_decay^k``, so early, generic layers move least. ``extra``
    (the semi-supervised objective's heads) trains at ``lr``. Biases and norms (ndim ≤ 1) get no weight
    decay. Frozen units are left out. Each group carries a ``name``.
    """
    if layer_decay is not None and not 0 < layer_decay <= 1:
        raise ConfigError(f"layer_decay must be in (0, 1], got {layer_decay}")
    named = [("head", list(head.parameters()), head_lr if head_lr is not None else lr)]
    for k, (unit, train) in enumerate(zip(reversed(units), reversed(trains)), start=1):
        if train:
            named.append((unit.name, unit.params, lr * (layer_decay ** k if layer_decay else 1.0)))
    if extra is not None:
        named.append(("ssl_objective", [p for p in extra.parameters() if p.requires_grad], lr))
    groups = []
    for name, params, group_lr in named:
        for suffix, ps, wd in (("", [p for p in params if p.ndim > 1], weight_decay),
                               ("/no_decay", [p for p in params if p.ndim <= 1], 0.0)):
            if ps:
                groups.append({"name": name + suffix, "params": ps, "lr": group_lr, "weight_decay": wd})
    return groups


# -- FixMatch ----------------------------------------------------------------------------------------
def pseudo_labels(weak_logits: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """FixMatch (Sohn et al. 2020): hard labels ``argmax p`` and mask ``max p ≥ τ``, ``p = softmax(logits)``.

    weak_logits: (B, C) from the weakly augmented view → labels (B,) long, mask (B,) bool.
    """
    confidence, labels = weak_logits.detach().float().softmax(dim=1).max(dim=1)
    return labels, confidence >= threshold


def fixmatch_loss(strong_logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(1/μB) Σ_b 1[max p_b ≥ τ] · CE(strong_logits_b, ŷ_b)`` — averaged over all unlabelled items, as in FixMatch."""
    return (F.cross_entropy(strong_logits, labels, reduction="none") * mask.float()).mean()


# -- the classifier ----------------------------------------------------------------------------------
class Classifier(nn.Module):
    """An encoder (kept in a ModuleDict keyed by modality, as objectives expect) plus a classifier head.

    ``forward(x) -> (B, num_classes)`` logits from the encoder's pooled features (B, dim).
    """

    def __init__(self, encoders: nn.ModuleDict, modality: str, num_classes: int, hidden: int = 0):
        super().__init__()
        self.encoders, self.modality = encoders, modality
        dim = encoders[modality].dim
        self.head = mlp(dim, hidden, num_classes, 2) if hidden > 0 else nn.Linear(dim, num_classes)

    @property
    def encoder(self) -> nn.Module:
        return self.encoders[self.modality]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x).pooled)


@torch.no_grad()
def fit_probe_head(model: Classifier, labelled: ArrayDataset, num_classes: int, C: float, batch_size: int,
                   device, max_iter: int = 2000) -> None:
    """Set ``model.head`` (a Linear) to the linear probe fitted on the frozen encoder's features of ``labelled``.

    The probe is ``mmssl.eval.probes``' own: StandardScaler + multinomial logistic regression (L-BFGS,
    L2 strength 1/C). The scaler folds into the layer, ``W = coef / σ``, ``b = intercept − W μ``, so the
    head's argmax equals the probe's prediction on every item.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from mmssl.eval.probes import extract_features

    if not isinstance(model.head, nn.Linear):
        raise ConfigError("the probe solver fits a linear head; set head_hidden=0 or solver=sgd")
    x, y = extract_features(model.encoder, labelled, model.modality, batch_size, device)
    if len(set(y.tolist())) < 2:
        raise DataError("the labelled subset has a single class; a classifier needs at least two")
    scaler = StandardScaler().fit(x)
    probe = LogisticRegression(C=C, max_iter=max_iter).fit(scaler.transform(x), y)
    coef, intercept = torch.as_tensor(probe.coef_, dtype=torch.float64), torch.as_tensor(probe.intercept_, dtype=torch.float64)
    if coef.shape[0] == 1:  # binary: sklearn keeps one row, the logit of class 1 against class 0
        coef, intercept = torch.cat([torch.zeros_like(coef), coef]), torch.cat([torch.zeros_like(intercept), intercept])
    weight = torch.zeros(num_classes, x.shape[1], dtype=torch.float64)
    bias = torch.full((num_classes,), -1e4, dtype=torch.float64)  # a class absent from the labels is never predicted
    rows = torch.as_tensor(probe.classes_, dtype=torch.long)
    scale = torch.as_tensor(scaler.scale_, dtype=torch.float64)
    mean = torch.as_tensor(scaler.mean_, dtype=torch.float64)
    weight[rows] = coef / scale
    bias[rows] = intercept - (coef / scale) @ mean
    model.head.weight.copy_(weight.to(model.head.weight))
    model.head.bias.copy_(bias.to(model.head.bias))


@torch.no_grad()
def accuracy_and_loss(model: Classifier, dataset: ArrayDataset, batch_size: int, device) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of ``model`` on ``dataset`` in eval mode."""
    was_training = model.training
    model.eval()
    correct, loss = 0, 0.0
    for batch in iterate(dataset, batch_size):
        logits = model(batch[model.modality].to(device))
        y = batch.labels.to(device)
        correct += int((logits.argmax(1) == y).sum())
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
    model.train(was_training)
    return correct / len(dataset), loss / len(dataset)
