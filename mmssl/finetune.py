"""`mmssl finetune`: how many labels a pretrained encoder saves — few-label fine-tuning, semi-supervised, transfer.

    mmssl finetune RUN_DIR|CHECKPOINT [overrides…]     e.g. labels=0.05 mode=partial unfreeze_last=2

The run's saved config supplies encoder and data; ``configs/finetune.yaml`` supplies the fine-tuning keys
(stored under ``finetune.``). Steps: build the data (``data=<name>`` swaps in another dataset of the same
modality, adapted to the encoder's input shape) → class-balanced labelled subset fixed by seed, with a
validation split carved from it → encoder (pretrained weights, or random with ``from_scratch=true``) and a
classifier head → freeze per ``mode`` → AdamW with optional layer-wise LR decay → labelled cross-entropy
(+ FixMatch pseudo-labels and the self-supervised objective on unlabelled data when ``semi=true``) → early
stopping on validation accuracy → test accuracy, written to ``RUN_DIR/finetune/<name>/`` (config.yaml,
metrics.jsonl, summary.json, classifier.pt with keys ``encoders.<modality>.*`` and ``head.*``) and printed.
"""

from __future__ import annotations

import copy
import difflib
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from omegaconf import DictConfig, OmegaConf
from torch import nn

from mmssl.config import compose, registry_kwargs, to_container
from mmssl.data.base import ArrayDataset, BatchIterator, DatasetSplits, iterate
from mmssl.encoders.heads import mlp
from mmssl.errors import ConfigError, DataError
from mmssl.logging import RunLogger, console
from mmssl.objectives.base import DEFAULT_AUGMENT
from mmssl.registry import AUGMENTATIONS, OBJECTIVES
from mmssl.train import checkpoint
from mmssl.train.build import OBJECTIVE_RUN_KEYS, build_data, build_encoders
from mmssl.train.trainer import resolve_device, warmup_cosine
from mmssl.types import IMAGE, Batch

MODES = ("frozen", "partial", "full", "semi")
_LUMA = torch.tensor([0.299, 0.587, 0.114])


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


# -- transfer: make another dataset fit the encoder --------------------------------------------------
def adapt_images(images: torch.Tensor, channels: int, size: tuple[int, int]) -> torch.Tensor:
    """(N, C, H, W) uint8/float images → (N, ``channels``, *size) of the same dtype.

    Grey → RGB repeats the channel; RGB → grey takes luma (ITU-R 601); resizing is bilinear with
    antialiasing so that downsampling (28×28 → 8×8) averages instead of aliasing.
    """
    if images.ndim != 4:
        raise DataError(f"transfer needs images (N, C, H, W), got shape {tuple(images.shape)}")
    dtype, x = images.dtype, images.float()
    if x.shape[1] != channels:
        if x.shape[1] == 1:
            x = x.expand(-1, channels, -1, -1)
        elif x.shape[1] == 3 and channels == 1:
            x = (x * _LUMA.view(1, 3, 1, 1)).sum(dim=1, keepdim=True)
        else:
            raise DataError(f"cannot adapt {x.shape[1]}-channel images to an encoder that reads {channels} "
                            "channels; pretrain on data with matching channels")
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    return x.round().clamp(0, 255).to(dtype) if dtype == torch.uint8 else x.contiguous()


def adapt_dataset(dataset: ArrayDataset, modality: str, shape: tuple[int, ...]) -> ArrayDataset:
    """``dataset`` with its ``modality`` tensor made to have per-item ``shape`` (images only), else a clear error."""
    x = dataset.data[modality]
    if tuple(x.shape[1:]) == tuple(shape):
        return dataset
    if modality != IMAGE or len(shape) != 3:
        raise DataError(f"{dataset.name}: {modality} items have shape {tuple(x.shape[1:])} but the encoder was "
                        f"pretrained on {tuple(shape)}; only images can be adapted (resize/channels)")
    data = dict(dataset.data) | {modality: adapt_images(x, shape[0], tuple(shape[1:]))}
    return ArrayDataset(data, dataset.labels, dataset.classes, dataset.name, dataset.extra)


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


# -- config ------------------------------------------------------------------------------------------
def load_run(target: str | Path) -> tuple[Path, Path, dict]:
    """(run folder, checkpoint path, checkpoint state) for a run folder or a checkpoint file."""
    path = Path(target)
    if path.is_dir():
        found = checkpoint.latest(path / "checkpoints") or checkpoint.latest(path)
        if found is None:
            raise ConfigError(f"no valid checkpoint in {path} (looked in {path / 'checkpoints'}); "
                              "pass a pretraining run folder or a step_*.pt file")
        return path, found[0], found[1]
    if not path.exists():
        raise ConfigError(f"{path} is neither a run folder nor a checkpoint; pass a pretraining run folder")
    state = checkpoint.load(path)
    return (path.parent.parent if path.parent.name == "checkpoints" else path.parent), path, state


def make_config(run_config: Mapping, overrides: list[str]) -> DictConfig:
    """The run's config with ``finetune`` = configs/finetune.yaml composed with the overrides that belong to it.

    ``data=<name>`` (and ``data.*`` alongside it) replaces the run's data; other overrides of keys that are
    not fine-tuning keys (``data.batch_size``, ``logger.mode``) edit the run's config, with type checks.
    """
    ft_keys = set(compose("finetune")) | {"data"}
    swap_data = any(o.split("=", 1)[0].lstrip("+~") == "data" for o in overrides)
    mine, theirs = [], []
    for o in overrides:
        top = o.split("=", 1)[0].lstrip("+~").split(".")[0]
        (mine if top in ft_keys and (top != "data" or swap_data) else theirs).append(o)
    ft = compose("finetune", mine)
    cfg = OmegaConf.create(dict(run_config))
    for o in theirs:
        _apply_override(cfg, o)
    if swap_data:
        cfg.data = ft.data
    ft = OmegaConf.masked_copy(ft, [k for k in ft if k != "data"])
    cfg.finetune = ft
    if ft.mode not in MODES:
        raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {ft.mode!r}")
    return cfg


def _apply_override(cfg: DictConfig, override: str) -> None:
    if "=" not in override:
        raise ConfigError(f"cannot parse override {override!r}; write key=value")
    key, raw = override.split("=", 1)
    key = key.lstrip("+")
    current = OmegaConf.select(cfg, key, default="__missing__")
    if current == "__missing__":
        known = _keys(cfg) + list(compose("finetune"))
        close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ConfigError(f"unknown config key {key!r} for finetune; {hint}(keys: configs/finetune.yaml or the run's config.yaml)")
    value = yaml.safe_load(raw)
    if isinstance(current, bool | int | float) and not isinstance(value, type(current)) and not (
            isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool)):
        raise ConfigError(f"bad override {override!r}: {key} must be {type(current).__name__} (run value {current!r})")
    OmegaConf.update(cfg, key, value, merge=False)


def _keys(node, prefix: str = "") -> list[str]:
    out = []
    for k, v in node.items():
        out.append(f"{prefix}{k}")
        if isinstance(v, DictConfig):
            out += _keys(v, f"{prefix}{k}.")
    return out


def default_name(cfg: DictConfig) -> str:
    ft = cfg.finetune
    kind = "scratch" if ft.from_scratch else ft.mode
    semi = "-semi" if ft.semi and ft.mode != "semi" else ""
    return f"{kind}{semi}-labels{ft.labels}-{cfg.data.name}-seed{ft.seed}"


# -- the run -----------------------------------------------------------------------------------------
def _load_prefix(module: nn.Module, state: Mapping[str, torch.Tensor], prefix: str, what: str) -> None:
    sub = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
    checkpoint.load_matching(module, sub, what=what)


def _build_augment(node, modality: str, data_augment: Mapping | None, role: str) -> nn.Module:
    """``node``: None (the modality's default view augmentation with the data's options), one spec
    ``{name, **kwargs}``, or one spec per modality ``{image: {name, …}, audio: {…}}``."""
    if node is not None and "name" not in node:
        if modality not in node:
            raise ConfigError(f"{role} has no entry for modality {modality!r} (it has {sorted(node)}); "
                              f"add {role}.{modality}.name=<augmentation>")
        node = node[modality]
    if node is None:
        name, kwargs = DEFAULT_AUGMENT.get(modality, "identity"), dict(data_augment or {})
    else:
        kwargs = registry_kwargs(node)
        name = node["name"]
    mods = AUGMENTATIONS.get(name).modalities
    if mods and modality not in mods:
        raise ConfigError(f"{role} {name!r} is for {list(mods)}, not {modality!r}; set {role}.name (`mmssl list augmentations`)")
    return AUGMENTATIONS.build(name, **kwargs)


def _ssl_objective(cfg: DictConfig, encoders: nn.ModuleDict, modality: str, model_state: Mapping | None) -> nn.Module:
    """The self-supervised term for unlabelled data: the run's own objective (pretrained heads) or a named one."""
    ft = cfg.finetune
    if ft.ssl_objective is None:
        slot = next((s for s, n in cfg.objective.items() if n.get("modality") in (None, modality)), None)
        if slot is None:
            raise ConfigError(f"the run has no objective for {modality!r}; set ssl_objective=<name> (`mmssl list objectives`)")
        node = cfg.objective[slot]
        objective = OBJECTIVES.build(node["name"], encoders, **registry_kwargs(node, OBJECTIVE_RUN_KEYS))
        if model_state is not None:  # its projector/predictor were trained with this encoder: keep them
            _load_prefix(objective, model_state, f"objectives.{slot}.", f"objective {slot!r}")
        return objective
    kwargs = {"modality": modality} | dict(ft.ssl_objective_kwargs or {})
    if cfg.data.get("augment") is not None and "augment_kwargs" not in kwargs and modality == IMAGE:
        kwargs["augment_kwargs"] = to_container(cfg.data.augment)
    return OBJECTIVES.build(str(ft.ssl_objective), encoders, **kwargs)


def finetune(cfg: DictConfig, model_state: Mapping[str, torch.Tensor] | None, out_dir: str | Path,
             reference_shape: Mapping[str, tuple[int, ...]] | None = None, data: DatasetSplits | None = None,
             source: str | None = None) -> dict:
    """Fine-tune (or probe, or semi-supervise) ``cfg``'s encoder and return the summary written to ``out_dir``.

    ``model_state``: the pretraining SSLModel state dict (None with ``from_scratch``); ``reference_shape``:
    per-item input shapes the encoder was pretrained on (transfer data is adapted to them); ``source``: the
    checkpoint path, recorded in the summary.
    """
    ft = cfg.finetune
    started = time.perf_counter()
    if ft.threads:
        torch.set_num_threads(int(ft.threads))
    device = resolve_device(str(ft.device))
    if ft.seed is None:
        ft.seed = int(cfg.seed)
    seed = int(ft.seed)
    semi = bool(ft.semi) or ft.mode == "semi"
    if semi and ft.mode == "frozen":
        raise ConfigError("semi=true trains the encoder on unlabelled data; use mode=full or mode=partial with it")

    data = data if data is not None else build_data(cfg)
    modality = ft.modality or next((m for m in cfg.encoder if m in data.train.modalities), None)
    if modality is None or modality not in data.train.modalities or modality not in cfg.encoder:
        raise ConfigError(f"dataset {cfg.data.name!r} has {data.train.modalities} but the pretrained encoders read "
                          f"{sorted(cfg.encoder)}; transfer needs a dataset of the same modality")
    if data.train.labels is None or data.test.labels is None:
        raise DataError(f"dataset {cfg.data.name!r} has no labels; fine-tuning needs labelled train and test splits")
    if reference_shape and modality in reference_shape:
        data = DatasetSplits(adapt_dataset(data.train, modality, reference_shape[modality]),
                             adapt_dataset(data.test, modality, reference_shape[modality]))
    num_classes = len(data.train.classes) if data.train.classes else int(data.train.labels.max()) + 1
    per_class = balanced_subset(data.train.labels, ft.labels, seed, data.train.classes)
    train_idx, val_idx = carve_validation(per_class, float(ft.val_fraction))
    labelled, val = data.train.subset(train_idx, "labelled"), data.train.subset(val_idx, "val") if len(val_idx) else None
    unlabelled_idx = torch.ones(len(data.train), dtype=torch.bool)
    unlabelled_idx[val_idx] = False  # validation items stay unseen, even without their labels
    unlabelled = data.train.subset(torch.nonzero(unlabelled_idx).flatten(), "unlabelled")

    torch.manual_seed(seed)
    encoders = build_encoders({modality: cfg.encoder[modality]})
    if not ft.from_scratch:
        if model_state is None:
            raise ConfigError("no pretrained weights given; pass a run folder or set from_scratch=true")
        _load_prefix(encoders[modality], model_state, f"encoders.{modality}.", f"encoder {modality!r}")
    model = Classifier(encoders, modality, num_classes, int(ft.head_hidden)).to(device)
    units = layer_units(model.encoder)
    trains = trainable_units(units, "full" if ft.mode == "semi" else str(ft.mode), int(ft.unfreeze_last))
    for unit, train in zip(units, trains):
        for p in unit.params:
            p.requires_grad_(train)
    frozen_modules = [u.module for u, t in zip(units, trains) if not t and u.module is not None]
    objective = _ssl_objective(cfg, encoders, modality, None if ft.from_scratch else model_state).to(device) if semi else None

    def train_mode() -> None:  # frozen units keep eval-mode BatchNorm so their statistics stay put too
        model.train()
        for m in frozen_modules:
            m.eval()
        if objective is not None:
            objective.train()

    optimizer = torch.optim.AdamW(param_groups(units, trains, model.head, float(ft.lr), float(ft.weight_decay),
                                               ft.layer_decay, ft.head_lr, objective))
    steps = int(ft.steps)
    if steps < 1:
        raise ConfigError(f"steps must be ≥ 1, got {steps}")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(int(ft.warmup_steps), steps, 0.0))
    weak = _build_augment(ft.weak_augment, modality, None, "weak_augment").to(device) if ft.augment_labelled or semi else None
    # a dataset's `augment` options are its image view options (configs/data), so other modalities ignore them
    data_augment = cfg.data.get("augment") if modality == IMAGE else None
    strong = _build_augment(ft.strong_augment, modality, data_augment, "strong_augment").to(device) if semi else None

    name = ft.name or default_name(cfg)
    out_dir = Path(out_dir) / name
    lcfg = cfg.get("logger") or {}
    logger = RunLogger(out_dir, to_container(cfg), mode=lcfg.get("mode", "auto"), project=lcfg.get("project", "mmssl"),
                       name=name, group=lcfg.get("group"), tags=list(lcfg.get("tags") or []) + ["finetune"])
    labelled_batches = BatchIterator(labelled, int(ft.batch_size), seed=seed).batches_from(0)
    unlabelled_batches = BatchIterator(unlabelled, int(ft.unlabelled_batch_size), seed=seed + 1).batches_from(0) if semi else None
    best = {"val_accuracy": -1.0, "val_loss": math.inf, "step": 0, "state": None}
    evals_without_gain, step = 0, 0
    train_mode()
    try:
        while step < steps:
            batch = next(labelled_batches).to(device)
            x = weak(batch[modality]) if ft.augment_labelled else batch[modality]
            ce = F.cross_entropy(model(x), batch.labels)
            loss, metrics = ce, {"train/labelled_ce": ce.item()}
            if semi:
                u = next(unlabelled_batches).to(device)
                ssl = objective(Batch({modality: u[modality]}), encoders)
                with torch.no_grad():
                    targets, mask = pseudo_labels(model(weak(u[modality])), float(ft.pseudo_threshold))
                pseudo = fixmatch_loss(model(strong(u[modality])), targets, mask)
                loss = loss + float(ft.ssl_weight) * ssl.loss + float(ft.pseudo_weight) * pseudo
                metrics |= {"train/ssl_loss": ssl.loss.item(), "train/pseudo_loss": pseudo.item(),
                            "train/pseudo_mask_rate": mask.float().mean().item(),
                            # the unlabelled items do have labels: how right are the kept pseudo-labels?
                            "train/pseudo_label_accuracy": (targets == u.labels)[mask].float().mean().item() if mask.any() else float("nan")}
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            if objective is not None:
                objective.after_step(encoders, step / steps)
            if step % int(ft.eval_every) == 0 or step == steps:
                metrics |= {"train/loss": loss.item(), "train/lr": scheduler.get_last_lr()[0]}
                if val is not None:
                    val_acc, val_loss = accuracy_and_loss(model, val, int(ft.eval_batch_size), device)
                    metrics |= {"val/accuracy": val_acc, "val/loss": val_loss}
                    if (val_acc, -val_loss) > (best["val_accuracy"], -best["val_loss"]):
                        best = {"val_accuracy": val_acc, "val_loss": val_loss, "step": step,
                                "state": copy.deepcopy(model.state_dict())}
                        evals_without_gain = 0
                    else:
                        evals_without_gain += 1
                logger.log(metrics, step)
                if int(ft.patience) and evals_without_gain >= int(ft.patience):
                    break
        if best["state"] is not None:
            model.load_state_dict(best["state"])
        test_acc, test_loss = accuracy_and_loss(model, data.test, int(ft.eval_batch_size), device)
        checkpoint.save({"model": model.state_dict(), "config": to_container(cfg), "step": step},
                        out_dir / "classifier.pt")
        counts = [len(i) for i in per_class]
        summary = {
            "test/accuracy": test_acc, "test/loss": test_loss,
            "val/best_accuracy": best["val_accuracy"] if val is not None else None,
            "best_step": best["step"] if val is not None else step, "steps_run": step,
            "labelled/train_items": len(labelled), "labelled/val_items": 0 if val is None else len(val),
            "labelled/per_class_min": min(counts), "labelled/per_class_max": max(counts),
            "unlabelled_items": len(unlabelled) if semi else 0, "train_items": len(data.train),
            "mode": str(ft.mode), "semi": semi, "from_scratch": bool(ft.from_scratch), "labels": ft.labels,
            "data": str(cfg.data.name), "modality": modality, "seed": seed,
            "trainable_units": [u.name for u, t in zip(units, trains) if t],
            "time/seconds": round(time.perf_counter() - started, 2), "folder": str(out_dir),
            "checkpoint": source,
        }
        logger.log({"test/accuracy": test_acc, "test/loss": test_loss}, step)
        logger.summary(summary)
    finally:
        logger.close()
    return summary


def run(target: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """``mmssl finetune target overrides…`` as a function: returns the summary."""
    run_dir, ckpt_path, state = load_run(target)
    cfg = make_config(state["config"], list(overrides))
    reference = None
    if cfg.data != OmegaConf.create(state["config"]["data"]):  # transfer: fit the new data to the encoder's input
        pretrain_data = build_data(OmegaConf.create(state["config"]))
        reference = {m: tuple(pretrain_data.train.data[m].shape[1:]) for m in pretrain_data.train.modalities}
    model_state = None if cfg.finetune.from_scratch else state["model"]
    return finetune(cfg, model_state, run_dir / "finetune", reference, source=str(ckpt_path))


def main(argv: list[str]) -> None:
    if not argv or argv[0].startswith("-") or "=" in argv[0]:
        raise ConfigError("usage: mmssl finetune RUN_DIR|CHECKPOINT [overrides…] (e.g. labels=0.05 mode=partial)")
    summary = run(argv[0], argv[1:])
    mode = "semi-supervised" if summary["mode"] == "semi" else summary["mode"] + (" + semi-supervised" if summary["semi"] else "")
    init = "from scratch" if summary["from_scratch"] else "pretrained"
    print(f"test accuracy {summary['test/accuracy']:.4f}  ({mode}, {init}, "
          f"{summary['labelled/train_items']} labelled + {summary['labelled/val_items']} validation items of "
          f"{summary['train_items']}, {summary['data']}, {summary['steps_run']} steps)")
    console(f"finetune folder: {summary['folder']}")
