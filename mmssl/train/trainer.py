"""The pretraining loop: seeded, checkpointed atomically, exactly resumable on CPU.

One step: batch (indexed from in-memory tensors, or decoded from files in DataLoader workers:
``mmssl.data.loader``) → device → objectives (each makes its own views on the device) →
weighted sum (under autocast in the run's precision: ``trainer.precision``, ``mmssl.precision``) → backward (under torchrun through DistributedDataParallel or FSDP2, see
``mmssl.train.distributed``) → non-finite check → grad clip → optimiser and LR schedule → EMA hooks →
metrics. Every ``checkpoint_every`` steps the model, optimiser, scheduler, RNG states, step and config
go into one atomic file, the chosen precision into ``precision.json``; ``resume=true`` continues from the newest valid one and reproduces the
uninterrupted run bit for bit on CPU (batch order is a function of (seed, epoch) — for tar shards the
loader's position is checkpointed —, augmentation draws come from the restored torch RNG, EMA momenta
are functions of progress, the precision is the one the run folder recorded).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from omegaconf import DictConfig
from tqdm import tqdm

from mmssl import checkpoint, precision
from mmssl.build import SSLModel, build_data, build_model
from mmssl.config import RENAMED_KEYS, to_container
from mmssl.data.base import DatasetSplits
from mmssl.data.loader import Loader
from mmssl.errors import ConfigError, MMSSLError, NonFiniteError  # noqa: F401  (NonFiniteError: re-exported)
from mmssl.logging import RunLogger, console
from mmssl.precision import Precision
from mmssl.train import distributed
from mmssl.train.optim import LARS
from mmssl.train.schedule import warmup_cosine
from mmssl.types import Batch

#: a run whose every step is non-finite (NaN data, NaN BatchNorm statistics) would otherwise skip forever
MAX_CONSECUTIVE_SKIPS = 50


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name} but CUDA is not available; use device=cpu or device=auto")
    return torch.device(name)


def make_optimizer(model: torch.nn.Module, tcfg: DictConfig) -> torch.optim.Optimizer:
    """AdamW, SGD or LARS; biases and normalisation parameters (ndim ≤ 1) get no weight decay (and, under
    LARS, no trust-ratio adaptation, as in the SimCLR, BYOL and Barlow Twins codes).

    AdamW and SGD take torch's fused kernels where every parameter is a plain CPU or CUDA tensor (not an
    FSDP shard): one pass over all of them instead of a Python loop per tensor — a ResNet-18's step took
    7.5 ms against 38 ms on a 2-core CPU, the same update."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": float(tcfg.weight_decay)},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]
    fused = bool(params) and all(type(p.data) is torch.Tensor and p.device.type in ("cpu", "cuda")
                                 and p.dtype.is_floating_point for p in params) or None
    if tcfg.optimizer == "adamw":
        betas = tuple(float(b) for b in tcfg.get("betas", (0.9, 0.999)))
        return torch.optim.AdamW(groups, lr=float(tcfg.lr), betas=betas, fused=fused)
    if tcfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=float(tcfg.lr), momentum=float(tcfg.momentum), nesterov=True, fused=fused)
    if tcfg.optimizer == "lars":
        groups[1]["lars_adaptation"] = False
        return LARS(groups, lr=float(tcfg.lr), momentum=float(tcfg.momentum),
                    trust_coefficient=float(tcfg.get("trust_coefficient", 0.001)))
    raise ConfigError(f"trainer.optimizer must be adamw, sgd or lars, got {tcfg.optimizer!r}")


PROBE_BATCH = 64  # samples in the step that precision=auto times (the run's batch when smaller)


class Trainer:
    """Runs ``cfg`` in ``run_dir``: build, (resume), train, checkpoint, evaluate.

    The loop (``fit``, ``train_step``, ``save``, ``try_resume``) is shared by every run that minimises a
    loss over batches; a subclass (``mmssl.finetune.trainer.FinetuneTrainer``) builds its own model, sets
    ``model`` (what is checkpointed), ``forward_module``, ``optimizer``, calls ``_init_loop(settings)`` and
    overrides the hooks: ``batches()`` (its batches from ``self.step`` on), ``forward(batch) -> (loss,
    {term: ObjectiveOutput})``, ``after_step()``, ``train_mode()``, ``log_metrics(loss, outputs, grad_norm,
    steps_per_second) -> dict`` (at log steps, before that step's checkpoint: a hook may validate there and
    set ``self.stop`` to end the run early) and ``extra_state()`` / ``load_extra_state(state)`` (what else
    an exact resume needs, stored under the checkpoint's ``task`` key).
    """

    description = "pretrain"  # the progress bar's label

    def __init__(self, cfg: DictConfig, run_dir: str | Path):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        if cfg.get("threads"):
            torch.set_num_threads(int(cfg.threads))
        self.device = resolve_device(str(cfg.device))
        self.rank, self.world = distributed.init_from_env(self.device)
        tcfg = cfg.trainer
        precision.check_value(str(tcfg.get("precision", "auto")), self.device)  # a bad value fails before any build
        torch.manual_seed(int(cfg.seed))
        self.data: DatasetSplits = build_data(cfg)
        missing = [m for m in cfg.encoder if m not in self.data.train.modalities]
        if missing:
            raise ConfigError(f"encoders for {missing} but dataset {cfg.data.name!r} has {self.data.train.modalities}; "
                              "pick a dataset with those modalities or drop the encoders")
        torch.manual_seed(int(cfg.seed))
        self.model: SSLModel = build_model(cfg).to(self.device)
        self._init_precision(tcfg, bool(cfg.resume), workload=self._step_workload())
        cl = tcfg.get("channels_last")
        self.channels_last = self.precision.channels_last if cl is None else bool(cl)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.strategy = str(tcfg.get("distributed", "ddp"))
        # DDP wraps (self.model stays the plain module: state dicts without a "module." prefix); FSDP shards
        # self.model in place. Either way self.forward_module is what a step runs forward/backward through.
        self.forward_module = distributed.wrap(
            self.model, self.device, self.strategy, bool(tcfg.get("sync_batchnorm", False)),
            bool(tcfg.get("find_unused_parameters", False)), shard_units=list(self.model.encoders.values()))
        if isinstance(self.forward_module, torch.nn.parallel.DistributedDataParallel):
            self.model = self.forward_module.module  # SyncBatchNorm conversion may have replaced layers
        self.sharded = distributed.is_sharded(self.model)
        if self.world > 1:
            torch.manual_seed(int(cfg.seed) + self.rank)  # per-rank augmentation streams
        self.optimizer = make_optimizer(self.model, cfg.trainer)
        self._init_loop(cfg.trainer)

    def _init_precision(self, tcfg: DictConfig, resume: bool, prefix: str = "trainer.",
                        workload: precision.Workload | None = None) -> None:
        """``self.precision`` from ``tcfg.precision`` (resumed: the run folder's record; see ``mmssl.precision``)
        and ``self.scaler``, fp16's loss scaler (None otherwise); ``workload`` is what auto's CPU probe times
        (default: the standard matmul + convolution)."""
        if "amp" in tcfg:  # a stored config of an earlier version
            raise ConfigError(f"{prefix}amp was replaced by {RENAMED_KEYS[prefix + 'amp']}; rename the key")
        self.precision: Precision = precision.for_run(str(tcfg.get("precision", "auto")), self.device, self.run_dir,
                                                      resume, workload, key=f"{prefix}precision")
        self.scaler = self.precision.grad_scaler(self.device)

    def _step_workload(self) -> precision.Workload:
        """What ``precision=auto`` times on a CPU: forward+backward of (a copy of) this run's model and objectives
        on a batch of its own training data (at most ``PROBE_BATCH`` samples). One CPU can prefer bf16 for a
        conv net and fp32 for a ViT (Fashion-MNIST ViT-tiny SimCLR here: bf16 1.8× slower, a ResNet-18 1.4×
        faster), so the probe runs the model, not a stand-in; cached per model, data config and batch."""
        n = min(int(self.cfg.data.batch_size), PROBE_BATCH)
        source = self.data.stream or self.data.train
        signature = f"{self.model!r}|{sorted(to_container(self.cfg.data).items())!r}|{n}"
        name = f"pretrain-{hashlib.sha256(signature.encode()).hexdigest()[:12]}-b{n}"

        def make():
            batch = next(iter(Loader(source, n, int(self.cfg.seed)))).to(self.device)
            model = copy.deepcopy(self.model).train()  # queues, centres and BN statistics of the run stay untouched

            def loss(module: torch.nn.Module, to_format) -> torch.Tensor:
                return module(dataclasses.replace(batch, data={k: to_format(v) for k, v in batch.data.items()}))[0]

            return model, loss

        return precision.module_workload(name, make, self.device, memory_format=True)

    def _init_loop(self, tcfg: DictConfig, prefix: str = "trainer.") -> None:
        """The schedule and counters of the loop over ``self.optimizer``, run by ``tcfg`` (the ``trainer`` keys:
        steps, warmup_steps, final_lr_fraction, grad_clip, nonfinite, log_every, checkpoint_every,
        eval_every, keep_checkpoints, progress); ``prefix`` names those keys in errors."""
        self.tcfg, self.key_prefix = tcfg, prefix
        total = int(tcfg.steps)
        if total < 1:
            raise ConfigError(f"{prefix}steps must be ≥ 1, got {total}")
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(int(tcfg.warmup_steps), total, float(tcfg.final_lr_fraction)))
        if tcfg.nonfinite not in ("raise", "skip"):
            raise ConfigError(f"{prefix}nonfinite must be raise or skip, got {tcfg.nonfinite!r}")
        self.step = 0
        self.stop = False  # set by a hook (early stopping) to end the run before tcfg.steps
        self.skipped_steps = 0
        self.consecutive_skips = 0
        self.resumed = False
        self.saved_step = -1  # the step of the newest checkpoint written or resumed from
        self.loader: Loader | None = None
        self.loader_state: dict | None = None  # restored from a checkpoint, read when the loader starts

    # -- checkpoints ------------------------------------------------------------------------------
    def state(self) -> dict:
        model_state, optimizer_state = distributed.full_state_dict(self.model, self.optimizer)  # collective under FSDP
        extra = self.extra_state()
        scaler = {"grad_scaler": self.scaler.state_dict()} if self.scaler is not None else {}
        return ({"task": extra} if extra else {}) | scaler | {
            "model": model_state,
            "optimizer": optimizer_state,
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "skipped_steps": self.skipped_steps,
            "rng": checkpoint.capture_rng(),
            "rng_per_rank": distributed.gather_objects(checkpoint.capture_rng()) if self.world > 1 else [],
            "loader_per_rank": (distributed.gather_objects(self._loader_state()) if self.world > 1
                                else [self._loader_state()]),
            "config": to_container(self.cfg),
        }

    def save(self) -> Path | None:
        state = self.state()  # collective when distributed: every rank contributes its RNG state
        path = None
        if self.rank == 0:
            path = checkpoint.save_checked(state, self.ckpt_dir / f"step_{self.step:08d}.pt",
                                           int(self.tcfg.keep_checkpoints), {"": state["model"]},
                                           f"step {self.step}", what="model weights")
        self.saved_step = self.step
        if self.world > 1:
            torch.distributed.barrier()
        return path

    def try_resume(self, found: tuple[Path, dict] | None = None) -> bool:
        """Continue from ``found`` (checkpoint path, state; the run folder's claim found it) or the newest valid one."""
        found = found or checkpoint.latest(self.ckpt_dir)
        if found is None:
            return False
        path, state = found
        if self.sharded:  # every rank reads the whole checkpoint and keeps its own shards
            distributed.load_full_state_dict(self.model, state["model"], self.optimizer, state["optimizer"])
        else:
            checkpoint.load_matching(self.model, state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and "grad_scaler" in state:
            self.scaler.load_state_dict(state["grad_scaler"])
        self.step, self.skipped_steps = int(state["step"]), int(state.get("skipped_steps", 0))
        per_rank = state.get("rng_per_rank") or []
        checkpoint.restore_rng(per_rank[self.rank] if len(per_rank) == self.world else state["rng"])
        self.saved_step = self.step
        loaders = state.get("loader_per_rank") or []
        self.loader_state = loaders[self.rank] if len(loaders) == self.world else None
        self.load_extra_state(state.get("task") or {})
        console(f"resumed from {path} at step {self.step}")
        self.resumed = True
        return True

    # -- training ---------------------------------------------------------------------------------
    @property
    def decode_errors(self) -> int:
        """Unreadable files skipped so far (``data.on_error=skip``): while caching plus while training."""
        cached = len(self.data.meta.get("skipped_files", []))
        return cached + (self.loader.decode_errors if self.loader else int((self.loader_state or {}).get("decode_errors", 0)))

    def _loader_state(self) -> dict:
        return self.loader.state_dict() if self.loader else dict(self.loader_state or {})

    def batches(self) -> Iterator[Batch]:
        """This rank's batches from the current step on, on the device, in the configured memory format.

        Only this rank's slice of each global batch is read (and decoded, in ``data.num_workers`` workers).
        """
        cfg = self.cfg
        self.loader = Loader(self.data.stream or self.data.train, int(cfg.data.batch_size), int(cfg.seed),
                             start_step=self.step, rank=self.rank, world=self.world,
                             num_workers=int(cfg.data.get("num_workers") or 0),
                             on_error=str(cfg.data.get("on_error") or "stop"),
                             pin_memory=self.device.type == "cuda", state=self.loader_state)
        for batch in self.loader:
            batch = batch.to(self.device, non_blocking=True)
            if self.channels_last:
                batch.data = {k: v.contiguous(memory_format=torch.channels_last) if v.ndim == 4 else v
                              for k, v in batch.data.items()}
            yield batch

    def train_step(self, batch: Batch) -> tuple[torch.Tensor, dict, torch.Tensor] | None:
        """One optimiser update; returns (loss, per-objective outputs, grad norm), or None when skipped.

        Forward under the run precision's autocast; with fp16 the loss is scaled before backward and the
        gradients unscaled before clipping (``torch.amp.GradScaler``), and an overflowing step is the
        scaler's to skip (it halves the scale), not a non-finite error.
        """
        loss, outputs = self._forward_in_precision(batch)
        self.optimizer.zero_grad(set_to_none=True)
        if self._nonfinite(loss, outputs, "loss"):
            return None
        # DDP all-reduces (averages) gradient buckets while backward runs; FSDP reduce-scatters
        precision.backward(loss, self.optimizer, self.scaler)
        grad_norm = self._clip()
        if self.scaler is not None and not distributed.all_finite(grad_norm):
            precision.optimizer_step(self.optimizer, self.scaler)  # skipped by the scaler: it halves its scale
            return None
        if self._nonfinite(grad_norm, outputs, "gradient"):
            return None
        precision.optimizer_step(self.optimizer, self.scaler)
        self.scheduler.step()
        self.step += 1
        self.consecutive_skips = 0
        self.after_step()
        return loss, outputs, grad_norm

    def _forward_in_precision(self, batch: Batch) -> tuple[torch.Tensor, dict]:
        """``forward`` under the precision's autocast. An op without a kernel for a precision that ``auto``
        chose (a plugin's ``torch.pdist`` in bf16) moves the run to fp32 — recorded, said once — instead of
        failing; a forced precision fails in one line naming the key (``precision.fallback``)."""
        try:
            with self.precision.autocast(self.device):
                return self.forward(batch)
        except (NotImplementedError, RuntimeError) as exc:
            if self.precision.name == "fp32" or not precision.lacks_kernel(exc):
                raise
            self.precision = precision.fallback(self.precision, exc, f"{self.key_prefix}precision")
        self.scaler = None
        console(f"warning: {self.precision.probe['reason']}; {self.key_prefix}precision=auto falls back to fp32 "
                f"for this run (set {self.key_prefix}precision=fp32 to skip the attempt)")
        if self.rank == 0:
            precision.write_record(self.run_dir, self.precision)
        return self.forward(batch)

    # -- hooks (pretraining's; see the class docstring) -------------------------------------------
    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict]:
        """(loss, {term: ObjectiveOutput}) of one batch, run through ``forward_module`` (DDP/FSDP)."""
        return self.forward_module(batch)

    def after_step(self) -> None:
        """After each optimiser update: EMA / momentum updates, as functions of progress."""
        self.model.after_step(self.step / int(self.tcfg.steps))

    def train_mode(self) -> None:
        self.model.train()

    def log_metrics(self, loss: torch.Tensor, outputs: dict, grad_norm: torch.Tensor, steps_per_second: float) -> dict:
        """The record logged at a log step (every rank calls it: the loss is averaged over ranks)."""
        # the per-rank (local-loss) values average to the global-batch loss; every rank takes part
        metrics = {"train/loss": distributed.mean_over_ranks(loss).item(),
                   "train/lr": self.scheduler.get_last_lr()[0],
                   "train/grad_norm": float(grad_norm),
                   "train/steps_per_second": steps_per_second,
                   "data/decode_errors": self.decode_errors}
        for slot, out in outputs.items():
            metrics[f"train/{slot}/loss"] = out.loss.item()
            metrics |= {f"train/{slot}/{k}": v for k, v in out.metrics.items()}
        return metrics

    def extra_state(self) -> dict:
        """What else an exact resume needs (checkpoint key ``task``; pretraining: nothing)."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        """Restore what ``extra_state`` returned."""

    def fit(self, logger: RunLogger) -> None:
        """Train to ``steps`` (or until a hook sets ``stop``): resume, record the precision, loop, save."""
        total = int(self.tcfg.steps)
        if self.cfg.resume and not self.resumed:
            self.try_resume()
        self.record_precision()
        if self.step >= total or self.stop:
            return
        batches = self.batches()
        self.train_mode()
        bar = tqdm(total=total, initial=self.step, disable=not self.tcfg.progress or self.rank != 0, mininterval=1.0,
                   desc=self.description, dynamic_ncols=True)
        start, start_step = time.perf_counter(), self.step
        while self.step < total and not self.stop:
            result = self.train_step(next(batches))
            if result is None:
                continue
            bar.update(1)
            metrics = self._after_update(logger, *result, (self.step - start_step) / (time.perf_counter() - start))
            if metrics:
                bar.set_postfix(loss=f"{metrics['train/loss']:.3f}")
        bar.close()
        if self.saved_step != self.step:  # written once: the loop may just have saved this very step
            self.save()
        if self.sharded:  # what rank 0 evaluates and reports on after training: the whole model
            self.model = self.eval_model()

    def record_precision(self) -> None:
        """``precision.json`` in the run folder (rank 0): what this run computes in, read back on resume."""
        if self.rank == 0 and self.precision.source != "recorded":
            precision.write_record(self.run_dir, self.precision)

    def _after_update(self, logger: RunLogger, loss: torch.Tensor, outputs: dict, grad_norm: torch.Tensor,
                      steps_per_second: float) -> dict | None:
        """At the step's multiples of ``log_every``, ``checkpoint_every``, ``eval_every``: log, save, evaluate.
        Returns the logged record (None when this step logs nothing)."""
        tcfg, total = self.tcfg, int(self.tcfg.steps)
        metrics = None
        if self.step % int(tcfg.log_every) == 0 or self.step == total:
            metrics = self.log_metrics(loss, outputs, grad_norm, steps_per_second)
            logger.log(metrics, self.step)
        if int(tcfg.checkpoint_every) and self.step % int(tcfg.checkpoint_every) == 0:
            self.save()
        if not self.stop and int(tcfg.eval_every) and self.step % int(tcfg.eval_every) == 0 and self.step < total:
            self._evaluate(logger)
        return metrics

    def _evaluate(self, logger: RunLogger) -> None:
        """The evaluation suite during training (rank 0 logs it), then back to train mode."""
        model = self.eval_model()  # collective under FSDP, so every rank calls it
        if self.rank == 0:
            from mmssl.eval.suite import evaluate

            logger.log({f"eval/{k}": v for k, v in evaluate(model, self.data, self.cfg, baselines=False).items()},
                       self.step)
        self.train_mode()

    def eval_model(self) -> SSLModel:
        """The model to evaluate: ``self.model``, or under FSDP an unsharded copy (collective: every rank calls it)."""
        if not self.sharded:
            return self.model
        state, _ = distributed.full_state_dict(self.model)
        model = build_model(self.cfg).to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        model.load_state_dict(state)
        return model

    def _clip(self) -> torch.Tensor:
        clip = self.tcfg.grad_clip
        params = [p for p in self.model.parameters() if p.grad is not None]
        if clip is None:
            norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        else:
            norm = torch.nn.utils.clip_grad_norm_(params, float(clip))
        # under FSDP the norm is a DTensor over the shards: make it a plain (replicated) tensor
        return norm.full_tensor() if hasattr(norm, "full_tensor") else norm

    def _nonfinite(self, value: torch.Tensor, outputs: dict, what: str) -> bool:
        """True (skip the step) or raise when ``value`` is NaN/Inf on any rank; names the step and the term."""
        if distributed.all_finite(value):
            return False
        bad = [slot for slot, out in outputs.items() if not torch.isfinite(out.loss).all()] or ["(all terms finite: gradient)"]
        message = (f"non-finite {what} at step {self.step + 1} from objective term(s) {bad}; "
                   f"lower {self.key_prefix}lr, set {self.key_prefix}grad_clip, or {self.key_prefix}nonfinite=skip")
        if self.tcfg.nonfinite == "skip" and self.consecutive_skips < MAX_CONSECUTIVE_SKIPS:
            self.skipped_steps += 1
            self.consecutive_skips += 1
            self.optimizer.zero_grad(set_to_none=True)
            console(f"warning: {message} (skipped)")
            return True
        if self.consecutive_skips:
            message += f" ({self.consecutive_skips} consecutive non-finite steps skipped; giving up)"
        raise NonFiniteError(message + f"; the last good checkpoint in {self.ckpt_dir} is intact")
