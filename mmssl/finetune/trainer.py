"""The fine-tuning task on the pretraining trainer's loop: `FinetuneTrainer`.

``mmssl.train.trainer.Trainer`` runs the loop (schedule, AMP, DDP, non-finite checks, atomic checkpoints,
bit-exact resume, metrics, progress bar); this module supplies what differs through its hooks: the
labelled subset and its validation split (``prepare``), the classifier with frozen units, the batches
(labelled, plus unlabelled ones when semi-supervised), the loss (cross-entropy + FixMatch pseudo-labels +
the self-supervised objective), validation with best-state tracking and early stopping at each log step,
and the state a resume needs beyond the model and optimiser (the best state so far, the patience count).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from mmssl import checkpoint
from mmssl.build import OBJECTIVE_RUN_KEYS, build_encoders
from mmssl.config import registry_kwargs, to_container
from mmssl.data.adapt import adapt_dataset
from mmssl.data.base import ArrayDataset, BatchIterator, DatasetSplits
from mmssl.errors import ConfigError, DataError
from mmssl.finetune.config import loop_settings
from mmssl.finetune.parts import (
    Classifier,
    accuracy_and_loss,
    balanced_subset,
    carve_validation,
    fixmatch_loss,
    grouped_subset,
    layer_units,
    param_groups,
    pseudo_labels,
    trainable_units,
)
from mmssl.objectives.base import DEFAULT_AUGMENT
from mmssl.registry import AUGMENTATIONS, OBJECTIVES
from mmssl.train import distributed
from mmssl.train.trainer import Trainer, resolve_device
from mmssl.types import IMAGE, Batch, ObjectiveOutput


# -- data --------------------------------------------------------------------------------------------
@dataclass
class Split:
    """The fine-tune's data: the labelled subset (per class), its validation part, the unlabelled rest."""

    data: DatasetSplits
    modality: str
    num_classes: int
    per_class: list[torch.Tensor]
    labelled: ArrayDataset
    val: ArrayDataset | None
    unlabelled: ArrayDataset
    use_probe: bool
    semi: bool


def use_probe_solver(ft: DictConfig, semi: bool) -> bool:
    """Whether the head is fitted by the linear probe's solver (not a loss over batches: one L-BFGS fit)."""
    solver = str(ft.solver)
    if solver not in ("auto", "probe", "sgd"):
        raise ConfigError(f"solver must be auto, probe or sgd, got {solver!r}")
    if solver == "probe" and (ft.mode != "frozen" or int(ft.head_hidden) > 0 or semi):
        raise ConfigError("solver=probe fits a linear head on frozen features; use it with mode=frozen head_hidden=0")
    return solver == "probe" or (solver == "auto" and ft.mode == "frozen" and int(ft.head_hidden) == 0 and not semi)


def _check_data(cfg: DictConfig, data: DatasetSplits) -> str:
    """The modality to fine-tune (one-line errors for data the encoder cannot read or without labels)."""
    ft = cfg.finetune
    modality = ft.modality or next((m for m in cfg.encoder if m in data.train.modalities), None)
    if modality is None or modality not in data.train.modalities or modality not in cfg.encoder:
        raise ConfigError(f"dataset {cfg.data.name!r} has {data.train.modalities} but the pretrained encoders read "
                          f"{sorted(cfg.encoder)}; transfer needs a dataset of the same modality")
    if data.train.labels is None or data.test.labels is None:
        raise DataError(f"dataset {cfg.data.name!r} has no labels; fine-tuning needs labelled train and test splits")
    return modality


def _labelled_subset(cfg: DictConfig, train: ArrayDataset, seed: int) -> list[torch.Tensor]:
    ft = cfg.finetune
    if not ft.per_group:
        return balanced_subset(train.labels, ft.labels, seed, train.classes)
    if train.groups is None:
        raise ConfigError(f"per_group=true needs a dataset with groups (speakers, writers); {cfg.data.name!r} has "
                          "none — set data.group_pattern (folders) or data.group_column (manifests)")
    return grouped_subset(train.labels, train.groups, ft.labels, seed, train.classes)


def prepare(cfg: DictConfig, data: DatasetSplits, reference_shape: Mapping[str, tuple[int, ...]] | None) -> Split:
    """Check and adapt ``data`` (transfer: to the encoder's ``reference_shape``), draw the labelled subset
    (fixed by ``finetune.seed``) and carve its validation split."""
    ft = cfg.finetune
    semi = bool(ft.semi) or ft.mode == "semi"
    if semi and ft.mode == "frozen":
        raise ConfigError("semi=true trains the encoder on unlabelled data; use mode=full or mode=partial with it")
    modality = _check_data(cfg, data)
    if reference_shape and modality in reference_shape:
        data = DatasetSplits(adapt_dataset(data.train, modality, reference_shape[modality]),
                             adapt_dataset(data.test, modality, reference_shape[modality]))
    num_classes = len(data.train.classes) if data.train.classes else int(data.train.labels.max()) + 1
    per_class = _labelled_subset(cfg, data.train, int(ft.seed))
    use_probe = use_probe_solver(ft, semi)
    # a handful of validation items per class cannot rank checkpoints: train a fixed budget on every label,
    # and the probe solver needs no validation at all (its regularisation is the probe's)
    few_labels = max(len(i) for i in per_class) <= int(ft.few_labels)
    train_idx, val_idx = carve_validation(per_class, 0.0 if use_probe or few_labels else float(ft.val_fraction))
    unlabelled_idx = torch.ones(len(data.train), dtype=torch.bool)
    unlabelled_idx[val_idx] = False  # validation items stay unseen, even without their labels
    return Split(data, modality, num_classes, per_class, data.train.subset(train_idx, "labelled"),
                 data.train.subset(val_idx, "val") if len(val_idx) else None,
                 data.train.subset(torch.nonzero(unlabelled_idx).flatten(), "unlabelled"), use_probe, semi)


# -- the parts ---------------------------------------------------------------------------------------
def load_prefix(module: nn.Module, state: Mapping[str, torch.Tensor], prefix: str, what: str) -> None:
    sub = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
    checkpoint.load_matching(module, sub, what=what)


def build_augment(node, modality: str, data_augment: Mapping | None, role: str) -> nn.Module:
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


def ssl_objective(cfg: DictConfig, encoders: nn.ModuleDict, modality: str, model_state: Mapping | None) -> nn.Module:
    """The self-supervised term for unlabelled data: the run's own objective (pretrained heads) or a named one."""
    ft = cfg.finetune
    if ft.ssl_objective is None:
        slot = next((s for s, n in cfg.objective.items() if n.get("modality") in (None, modality)), None)
        if slot is None:
            raise ConfigError(f"the run has no objective for {modality!r}; set ssl_objective=<name> (`mmssl list objectives`)")
        node = cfg.objective[slot]
        objective = OBJECTIVES.build(node["name"], encoders, **registry_kwargs(node, OBJECTIVE_RUN_KEYS))
        if model_state is not None:  # its projector/predictor were trained with this encoder: keep them
            load_prefix(objective, model_state, f"objectives.{slot}.", f"objective {slot!r}")
        return objective
    kwargs = {"modality": modality} | dict(ft.ssl_objective_kwargs or {})
    if cfg.data.get("augment") is not None and "augment_kwargs" not in kwargs and modality == IMAGE:
        kwargs["augment_kwargs"] = to_container(cfg.data.augment)
    return OBJECTIVES.build(str(ft.ssl_objective), encoders, **kwargs)


class Learner(nn.Module):
    """Classifier plus (semi-supervised) objective and views: one module to checkpoint and for DDP to wrap.

    ``forward(x, u)`` → (logits of the labelled views x, and for unlabelled items u: the objective's
    output, the weak-view logits without gradient, the strong-view logits), in the order the
    single-process loop always drew its augmentations.
    """

    def __init__(self, model: Classifier, objective: nn.Module | None, weak: nn.Module | None, strong: nn.Module | None):
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


# -- the trainer -------------------------------------------------------------------------------------
class FinetuneTrainer(Trainer):
    """Fine-tune ``cfg``'s encoder on ``split`` through the pretraining loop (see the module docstring).

    ``model`` is the ``Learner`` (classifier, objective and views: all checkpointed), ``classifier`` the
    classifier alone. Under torchrun the labelled and unlabelled batches are split over the ranks and the
    step runs through DistributedDataParallel; every rank validates alike, so early stopping agrees.
    """

    description = "finetune"

    def __init__(self, cfg: DictConfig, split: Split, model_state: Mapping[str, torch.Tensor] | None,
                 run_dir: str | Path):
        ft = cfg.finetune
        self.cfg, self.split, self.data = cfg, split, split.data
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        if ft.threads:
            torch.set_num_threads(int(ft.threads))
        self.device = resolve_device(str(ft.device))
        self.rank, self.world = distributed.init_from_env(self.device)
        # the probe solver fits outside the loop, in fp32; the loop's forward runs in the resolved precision
        self._init_precision(ft if not split.use_probe else OmegaConf.create({"precision": "fp32"}), bool(ft.resume),
                             prefix="")
        self.channels_last = False  # the fine-tune's batches and classifier stay in the default memory format
        self.seed = int(ft.seed)
        torch.manual_seed(self.seed)
        self.classifier, self.units, self.trains = self._build_classifier(model_state)
        self.frozen_modules = [u.module for u, t in zip(self.units, self.trains) if not t and u.module is not None]
        objective = ssl_objective(cfg, self.classifier.encoders, split.modality,
                                  None if ft.from_scratch else model_state).to(self.device) if split.semi else None
        self.optimizer = torch.optim.AdamW(param_groups(self.units, self.trains, self.classifier.head, float(ft.lr),
                                                        float(ft.weight_decay), ft.layer_decay, ft.head_lr, objective))
        self._init_loop(loop_settings(ft), prefix="")
        weak = build_augment(ft.weak_augment, split.modality, None, "weak_augment").to(self.device) \
            if ft.augment_labelled or split.semi else None
        # a dataset's `augment` options are its image view options (configs/data), so other modalities ignore them
        data_augment = cfg.data.get("augment") if split.modality == IMAGE else None
        strong = build_augment(ft.strong_augment, split.modality, data_augment, "strong_augment").to(self.device) \
            if split.semi else None
        self.model = Learner(self.classifier, objective, weak, strong)
        self.forward_module = distributed.wrap(self.model, self.device, "ddp")
        self.strategy, self.sharded = "ddp", False
        if self.world > 1:
            torch.manual_seed(self.seed + 100_003 * self.rank)  # each rank its own augmentation stream
        self.best = {"val_accuracy": -1.0, "val_loss": math.inf, "step": 0, "state": None}
        self.evals_without_gain = 0

    def _build_classifier(self, model_state: Mapping | None):
        """The encoder (pretrained weights, or random with ``from_scratch``) with a head; frozen per ``mode``."""
        ft, modality = self.cfg.finetune, self.split.modality
        encoders = build_encoders({modality: self.cfg.encoder[modality]})
        if not ft.from_scratch:
            if model_state is None:
                raise ConfigError("no pretrained weights given; pass a run folder or set from_scratch=true")
            load_prefix(encoders[modality], model_state, f"encoders.{modality}.", f"encoder {modality!r}")
        classifier = Classifier(encoders, modality, self.split.num_classes, int(ft.head_hidden)).to(self.device)
        units = layer_units(classifier.encoder)
        trains = trainable_units(units, "full" if ft.mode == "semi" else str(ft.mode), int(ft.unfreeze_last))
        for unit, train in zip(units, trains):
            for p in unit.params:
                p.requires_grad_(train)
        return classifier, units, trains

    # -- hooks -------------------------------------------------------------------------------------
    def batches(self) -> Iterator[tuple[Batch, Batch | None]]:
        """(labelled batch, unlabelled batch or None) of each step from ``self.step`` on: a function of the step."""
        ft, split = self.cfg.finetune, self.split
        labelled = BatchIterator(split.labelled, int(ft.batch_size), seed=self.seed).batches_from(self.step)
        unlabelled = BatchIterator(split.unlabelled, int(ft.unlabelled_batch_size),
                                   seed=self.seed + 1).batches_from(self.step) if split.semi else None
        while True:
            batch = _shard(next(labelled), self.rank, self.world, "batch_size").to(self.device)
            u = _shard(next(unlabelled), self.rank, self.world, "unlabelled_batch_size").to(self.device) \
                if unlabelled is not None else None
            yield batch, u

    def forward(self, batches: tuple[Batch, Batch | None]) -> tuple[torch.Tensor, dict]:
        """Labelled cross-entropy (+ ssl_weight · objective + pseudo_weight · FixMatch loss when semi)."""
        ft, modality, (batch, u) = self.cfg.finetune, self.split.modality, batches
        x = self.model.weak(batch[modality]) if ft.augment_labelled else batch[modality]
        logits, ssl, weak_logits, strong_logits = self.forward_module(x, None if u is None else u[modality])
        ce = F.cross_entropy(logits.float(), batch.labels)  # under bf16 autocast: the loss in fp32
        outputs = {"labelled_ce": ObjectiveOutput(ce)}
        if u is None:
            return ce, outputs
        targets, mask = pseudo_labels(weak_logits, float(ft.pseudo_threshold))
        pseudo = fixmatch_loss(strong_logits.float(), targets, mask)
        # the unlabelled items do have labels: how right are the kept pseudo-labels?
        right = (targets == u.labels)[mask].float().mean().item() if mask.any() else float("nan")
        outputs |= {"ssl": ssl, "pseudo": ObjectiveOutput(pseudo, {"mask_rate": mask.float().mean().item(),
                                                                     "label_accuracy": right})}
        return ce + float(ft.ssl_weight) * ssl.loss + float(ft.pseudo_weight) * pseudo, outputs

    def after_step(self) -> None:
        if self.model.objective is not None:
            self.model.objective.after_step(self.classifier.encoders, self.step / int(self.tcfg.steps))

    def train_mode(self) -> None:
        """Train mode, except frozen units: their BatchNorm statistics stay put too."""
        self.model.train()
        for m in self.frozen_modules:
            m.eval()

    def log_metrics(self, loss: torch.Tensor, outputs: dict, grad_norm: torch.Tensor, steps_per_second: float) -> dict:
        """The step's losses, then validation: the best state so far is kept, ``patience`` evaluations
        without a gain stop the run."""
        metrics = {"train/labelled_ce": outputs["labelled_ce"].loss.item()}
        if "ssl" in outputs:
            pseudo = outputs["pseudo"]
            metrics |= {"train/ssl_loss": outputs["ssl"].loss.item(), "train/pseudo_loss": pseudo.loss.item(),
                        "train/pseudo_mask_rate": pseudo.metrics["mask_rate"],
                        "train/pseudo_label_accuracy": pseudo.metrics["label_accuracy"]}
        metrics |= {"train/loss": loss.item(), "train/lr": self.scheduler.get_last_lr()[0],
                    "train/grad_norm": float(grad_norm), "train/steps_per_second": steps_per_second}
        if self.split.val is not None:
            metrics |= self._validate()
        return metrics

    def _validate(self) -> dict:
        ft = self.cfg.finetune
        val_acc, val_loss = accuracy_and_loss(self.classifier, self.split.val, int(ft.eval_batch_size), self.device)
        self.train_mode()  # accuracy_and_loss restores train mode on every module, frozen ones included
        if (val_acc, -val_loss) > (self.best["val_accuracy"], -self.best["val_loss"]):
            self.best = {"val_accuracy": val_acc, "val_loss": val_loss, "step": self.step,
                         "state": copy.deepcopy(self.classifier.state_dict())}
            self.evals_without_gain = 0
        else:
            self.evals_without_gain += 1
        self.stop = bool(int(ft.patience)) and self.evals_without_gain >= int(ft.patience)
        return {"val/accuracy": val_acc, "val/loss": val_loss}

    def extra_state(self) -> dict:
        return {"best": self.best, "evals_without_gain": self.evals_without_gain, "stopped": self.stop}

    def load_extra_state(self, state: dict) -> None:
        self.best, self.evals_without_gain = dict(state["best"]), int(state["evals_without_gain"])
        self.stop = bool(state["stopped"])
