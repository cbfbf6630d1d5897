"""`mmssl finetune`: how many labels a pretrained encoder saves — few-label fine-tuning, semi-supervised, transfer.

    mmssl finetune RUN_DIR|CHECKPOINT [overrides…]     e.g. labels=0.05 mode=partial unfreeze_last=2

The run's saved config supplies encoder and data; ``configs/finetune.yaml`` supplies the fine-tuning keys
(stored under ``finetune.``). Steps: build the data (``data=<name>`` swaps in another dataset of the same
modality, adapted to the encoder's input shape) → class-balanced labelled subset fixed by seed, with a
validation split carved from it → encoder (pretrained weights, or random with ``from_scratch=true``) and a
classifier head → freeze per ``mode`` → AdamW with optional layer-wise LR decay → labelled cross-entropy
(+ FixMatch pseudo-labels and the self-supervised objective on unlabelled data when ``semi=true``) → early
stopping on validation accuracy (not with ≤ ``few_labels`` labels per class: a fixed budget then) → test
accuracy; ``mode=frozen`` with a linear head instead fits the head with the linear probe's own solver
(``solver=probe``), so it scores what the probe scores on the same features; written to ``RUN_DIR/finetune/<name>/`` (config.yaml,
metrics.jsonl, summary.json, classifier.pt with keys ``encoders.<modality>.*`` and ``head.*``) and printed.
"""

from __future__ import annotations

import copy
import difflib
import math
import time
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from omegaconf import DictConfig, OmegaConf
from torch import nn

from mmssl import checkpoint
from mmssl.build import OBJECTIVE_RUN_KEYS, build_data, build_encoders
from mmssl.config import compose, registry_kwargs, stored_config, to_container
from mmssl.data.adapt import adapt_dataset
from mmssl.data.base import BatchIterator, DatasetSplits
from mmssl.errors import ConfigError, DataError
from mmssl.finetune.parts import (  # noqa: F401  (re-exported: the public pieces live in parts.py)
    Classifier,
    Unit,
    _param_children,
    _per_class_count,
    _unwrap,
    accuracy_and_loss,
    balanced_subset,
    carve_validation,
    fit_probe_head,
    fixmatch_loss,
    grouped_subset,
    layer_units,
    param_groups,
    pseudo_labels,
    trainable_units,
)
from mmssl.inference import find_checkpoint
from mmssl.logging import RunLogger, console
from mmssl.objectives.base import DEFAULT_AUGMENT
from mmssl.registry import AUGMENTATIONS, OBJECTIVES
from mmssl.train import distributed, run_folder
from mmssl.train.trainer import resolve_device, warmup_cosine
from mmssl.types import IMAGE, Batch

MODES = ("frozen", "partial", "full", "semi")


# -- config ------------------------------------------------------------------------------------------
#: data keys that say how audio is read; a transfer inherits them from the pretraining run
AUDIO_READ_KEYS = ("sample_rate", "clip_seconds")


def make_config(run_config: Mapping, overrides: list[str], source: str | Path = "the run") -> DictConfig:
    """The run's config with ``finetune`` = configs/finetune.yaml composed with the overrides that belong to it.

    ``data=<name>`` (and ``data.*`` alongside it) replaces the run's data, read at the run's audio
    ``sample_rate``/``clip_seconds`` unless those are given; other overrides of keys that are
    not fine-tuning keys (``data.batch_size``, ``logger.mode``) edit the run's config, with type checks.
    """
    ft_keys = set(compose("finetune")) | {"data"}
    swap_data = any(o.split("=", 1)[0].lstrip("+~") == "data" for o in overrides)
    mine, theirs = [], []
    for o in overrides:
        top = o.split("=", 1)[0].lstrip("+~").split(".")[0]
        (mine if top in ft_keys and (top != "data" or swap_data) else theirs).append(o)
    ft = compose("finetune", mine)
    cfg = stored_config(run_config, source)  # inert data: no resolvers, downloads or init weights
    # the run folder's logger settings are not acted on (no upload because a folder says so): defaults + overrides
    cfg.logger = compose("pretrain").logger
    for o in theirs:
        _apply_override(cfg, o)
    if swap_data:
        # audio is read at the pretraining run's rate and clip length unless the overrides say otherwise,
        # so a folder of recordings (any rate) reaches the encoder resampled to what it learned from
        given = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
        for key in AUDIO_READ_KEYS:
            if key in ft.data and key in cfg.data and f"data.{key}" not in given:
                ft.data[key] = cfg.data[key]
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


class _Learner(nn.Module):
    """Classifier plus (semi-supervised) objective: one forward for DistributedDataParallel to wrap.

    ``forward(x, u)`` → (logits of the labelled views x, and for unlabelled items u: the objective's
    output, the weak-view logits without gradient, the strong-view logits), in the order the
    single-process loop always drew its augmentations.
    """

    def __init__(self, model: nn.Module, objective: nn.Module | None, weak: nn.Module | None, strong: nn.Module | None):
        super().__init__()
        self.model, self.objective, self.weak, self.strong = model, objective, weak, strong

    def forward(self, x: torch.Tensor, u: torch.Tensor | None = None):
        logits = self.model(x)
        if u is None:
            return logits, None, None, None
        ssl = self.objective(Batch({self.model.modality: u}), self.model.encoders)
        with torch.no_grad():
            weak_logits = self.model(self.weak(u))
        return logits, ssl, weak_logits, self.model(self.strong(u))


def _shard(batch: Batch, rank: int, world: int, key: str) -> Batch:
    if batch.size % world:
        raise ConfigError(f"{key}={batch.size} (capped at the number of items) is not divisible by the world size "
                          f"{world}; pick a multiple")
    return distributed.shard(batch, rank, world)


def finetune(cfg: DictConfig, model_state: Mapping[str, torch.Tensor] | None, out_dir: str | Path,
             reference_shape: Mapping[str, tuple[int, ...]] | None = None, data: DatasetSplits | None = None,
             source: str | None = None) -> dict:
    """Fine-tune (or probe, or semi-supervise) ``cfg``'s encoder and return the summary written to ``out_dir``.

    ``model_state``: the pretraining SSLModel state dict (None with ``from_scratch``); ``reference_shape``:
    per-item input shapes the encoder was pretrained on (transfer data is adapted to them); ``source``: the
    checkpoint path, recorded in the summary. Under torchrun the labelled and unlabelled batches are split
    over the ranks and the step runs through DistributedDataParallel (every rank validates alike, so
    early stopping agrees; rank 0 logs and writes the results).
    """
    ft = cfg.finetune
    started = time.perf_counter()
    if ft.threads:
        torch.set_num_threads(int(ft.threads))
    device = resolve_device(str(ft.device))
    rank, world = distributed.init_from_env(device)
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
    if ft.per_group:
        if data.train.groups is None:
            raise ConfigError(f"per_group=true needs a dataset with groups (speakers, writers); {cfg.data.name!r} has "
                              "none — set data.group_pattern (folders) or data.group_column (manifests)")
        per_class = grouped_subset(data.train.labels, data.train.groups, ft.labels, seed, data.train.classes)
    else:
        per_class = balanced_subset(data.train.labels, ft.labels, seed, data.train.classes)
    solver = str(ft.solver)
    if solver not in ("auto", "probe", "sgd"):
        raise ConfigError(f"solver must be auto, probe or sgd, got {solver!r}")
    if solver == "probe" and (ft.mode != "frozen" or int(ft.head_hidden) > 0 or semi):
        raise ConfigError("solver=probe fits a linear head on frozen features; use it with mode=frozen head_hidden=0")
    use_probe = solver == "probe" or (solver == "auto" and ft.mode == "frozen" and int(ft.head_hidden) == 0 and not semi)
    # a handful of validation items per class cannot rank checkpoints: train a fixed budget on every label,
    # and the probe solver needs no validation at all (its regularisation is the probe's)
    few_labels = max(len(i) for i in per_class) <= int(ft.few_labels)
    val_fraction = 0.0 if use_probe or few_labels else float(ft.val_fraction)
    train_idx, val_idx = carve_validation(per_class, val_fraction)
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
    learner = distributed.wrap(_Learner(model, objective, weak, strong), device, "ddp")
    if world > 1:
        torch.manual_seed(seed + 100_003 * rank)  # each rank its own augmentation stream

    labelled_batches = BatchIterator(labelled, int(ft.batch_size), seed=seed).batches_from(0)
    unlabelled_batches = BatchIterator(unlabelled, int(ft.unlabelled_batch_size), seed=seed + 1).batches_from(0) if semi else None
    target = Path(out_dir) / (ft.name or default_name(cfg))
    # an explicit name must be a free folder; a derived one moves on to <name>-2, -3… instead of overwriting
    # (rank 0 owns the folder; the other ranks write nothing)
    folder = run_folder.claim(target if ft.name else None, "finetune", default=lambda: target, what="name") \
        if rank == 0 else None
    out_dir, name = (folder.path, folder.path.name) if folder is not None else (target, target.name)
    lcfg = cfg.get("logger") or {}
    try:
        logger = RunLogger(out_dir, to_container(cfg), mode=lcfg.get("mode", "auto"),
                           project=lcfg.get("project", "mmssl"), name=name, group=lcfg.get("group"),
                           tags=list(lcfg.get("tags") or []) + ["finetune"], enabled=rank == 0)
    except BaseException:
        if folder is not None:
            folder.release()
        raise
    best = {"val_accuracy": -1.0, "val_loss": math.inf, "step": 0, "state": None}
    evals_without_gain, step = 0, 0
    train_mode()
    try:
        if use_probe:  # the linear probe's own solver on the frozen features, so the head scores what the probe does
            C = float(ft.probe_C if ft.probe_C is not None else (cfg.get("eval") or {}).get("linear_probe_C", 1.0))
            fit_probe_head(model, labelled, num_classes, C, int(ft.eval_batch_size), device)
            logger.log({"train/probe_C": C}, 0)
        while step < steps and not use_probe:
            batch = _shard(next(labelled_batches), rank, world, "batch_size").to(device)
            x = weak(batch[modality]) if ft.augment_labelled else batch[modality]
            u = _shard(next(unlabelled_batches), rank, world, "unlabelled_batch_size").to(device) if semi else None
            logits, ssl, weak_logits, strong_logits = learner(x, None if u is None else u[modality])
            ce = F.cross_entropy(logits, batch.labels)
            loss, metrics = ce, {"train/labelled_ce": ce.item()}
            if semi:
                targets, mask = pseudo_labels(weak_logits, float(ft.pseudo_threshold))
                pseudo = fixmatch_loss(strong_logits, targets, mask)
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
        if rank == 0:
            checkpoint.save({"model": model.state_dict(), "config": to_container(cfg), "step": step},
                            out_dir / "classifier.pt")
        counts = [len(i) for i in per_class]
        summary = {
            "test/accuracy": test_acc, "test/loss": test_loss,
            "val/best_accuracy": best["val_accuracy"] if val is not None else None,
            "best_step": best["step"] if val is not None else step, "steps_run": step,
            "solver": "probe" if use_probe else "sgd", "early_stopping": val is not None and int(ft.patience) > 0,
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
        if folder is not None:
            folder.release()
    return summary


def run(target: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """``mmssl finetune target overrides…`` as a function: returns the summary."""
    run_dir, ckpt_path, state = find_checkpoint(target)
    cfg = make_config(state.get("config"), list(overrides), ckpt_path)
    stored = stored_config(state["config"], ckpt_path)
    reference = None
    if cfg.data != stored.data:  # transfer: fit the new data to the encoder's input
        pretrain_data = build_data(stored)
        reference = {m: tuple(pretrain_data.train.data[m].shape[1:]) for m in pretrain_data.train.modalities}
    model_state = None if cfg.finetune.from_scratch else state["model"]
    return finetune(cfg, model_state, run_dir / "finetune", reference, source=str(ckpt_path))


USAGE = """usage: mmssl finetune RUN_DIR|CHECKPOINT [overrides…]

Few-label fine-tuning or semi-supervised training of a pretrained run's encoder. Overrides are keys of
the packaged finetune config (labels, mode, unfreeze_last, layer_decay, from_scratch, semi, head_hidden,
name, seed, device, threads, data=<option>) or of the run's own config (data.batch_size, logger.mode…).
Example: mmssl finetune runs/my-run labels=0.05 mode=partial"""


def main(argv: list[str]) -> None:
    if argv and argv[0] in ("-h", "--help"):
        print(USAGE)
        return
    if not argv or argv[0].startswith("-") or "=" in argv[0]:
        raise ConfigError("usage: mmssl finetune RUN_DIR|CHECKPOINT [overrides…] (e.g. labels=0.05 mode=partial)")
    summary = run(argv[0], argv[1:])
    mode = "semi-supervised" if summary["mode"] == "semi" else summary["mode"] + (" + semi-supervised" if summary["semi"] else "")
    init = "from scratch" if summary["from_scratch"] else "pretrained"
    print(f"test accuracy {summary['test/accuracy']:.4f}  ({mode}, {init}, "
          f"{summary['labelled/train_items']} labelled + {summary['labelled/val_items']} validation items of "
          f"{summary['train_items']}, {summary['data']}, {summary['steps_run']} steps)")
    console(f"finetune folder: {summary['folder']}")
