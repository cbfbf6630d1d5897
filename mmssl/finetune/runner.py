"""`mmssl finetune` as functions: ``finetune(cfg, …)`` (one fine-tune into a folder), ``run(target, overrides)``
(from a run folder or checkpoint) and ``main(argv)`` (the command)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

import torch
from omegaconf import DictConfig

from mmssl import checkpoint
from mmssl.build import build_data
from mmssl.config import stored_config, to_container
from mmssl.data.base import DatasetSplits
from mmssl.errors import ConfigError
from mmssl.finetune.config import RESUME_SAFE_KEYS, default_name, make_config
from mmssl.finetune.parts import accuracy_and_loss, fit_probe_head
from mmssl.finetune.trainer import FinetuneTrainer, prepare
from mmssl.logging import RunLogger, console, drop_metrics_after
from mmssl.train import run_folder


def finetune(cfg: DictConfig, model_state: Mapping[str, torch.Tensor] | None, out_dir: str | Path,
             reference_shape: Mapping[str, tuple[int, ...]] | None = None, data: DatasetSplits | None = None,
             source: str | None = None) -> dict:
    """Fine-tune (or probe, or semi-supervise) ``cfg``'s encoder and return the summary written to ``out_dir/<name>``.

    ``model_state``: the pretraining SSLModel state dict (None with ``from_scratch``); ``reference_shape``:
    per-item input shapes the encoder was pretrained on (transfer data is adapted to them); ``source``: the
    checkpoint path, recorded in the summary. The gradient loop is the pretraining trainer's
    (``FinetuneTrainer``): checkpoints every ``checkpoint_every`` steps, ``resume=true`` continues the
    folder bit-exactly on CPU. ``mode=frozen`` with a linear head fits the head with the linear probe's
    solver instead (one L-BFGS fit on the features, not a loss over batches: nothing to resume).
    Under torchrun rank 0 logs and writes the results.
    """
    ft = cfg.finetune
    started = time.perf_counter()
    if ft.seed is None:
        ft.seed = int(cfg.seed)
    split = prepare(cfg, data if data is not None else build_data(cfg), reference_shape)
    target = Path(out_dir) / (ft.name or default_name(cfg))
    trainer = FinetuneTrainer(cfg, split, model_state, target)  # builds (and validates) before the folder is touched
    resume = bool(ft.resume)
    # an explicit name (or a resumed one) is that folder; a derived one moves on to <name>-2, -3… instead of
    # overwriting (rank 0 owns the folder; the other ranks write nothing)
    folder = run_folder.claim(target if ft.name or resume else None, "finetune", resume=resume,
                              config=to_container(cfg), allow=[*RESUME_SAFE_KEYS, *(ft.resume_override or [])],
                              default=lambda: target, what="name") if trainer.rank == 0 else None
    out = folder.path if folder is not None else target
    trainer.run_dir, trainer.ckpt_dir = out, out / "checkpoints"
    try:
        if resume and trainer.try_resume(folder.resume_from if folder is not None else None) and trainer.rank == 0:
            drop_metrics_after(out, trainer.step)
        lcfg = cfg.get("logger") or {}
        logger = RunLogger(out, to_container(cfg), mode=lcfg.get("mode", "auto"), project=lcfg.get("project", "mmssl"),
                           name=out.name, group=lcfg.get("group"), tags=list(lcfg.get("tags") or []) + ["finetune"],
                           resume=trainer.resumed, enabled=trainer.rank == 0)
    except BaseException:
        if folder is not None:
            folder.release()
        raise
    try:
        _train(trainer, logger)
        return _finish(trainer, logger, source, started)
    finally:
        logger.close()
        if folder is not None:
            folder.release()


def _train(trainer: FinetuneTrainer, logger: RunLogger) -> None:
    cfg, split = trainer.cfg, trainer.split
    if not split.use_probe:
        trainer.fit(logger)
        return
    # the linear probe's own solver on the frozen features, so the head scores what the probe does
    ft = cfg.finetune
    C = float(ft.probe_C if ft.probe_C is not None else (cfg.get("eval") or {}).get("linear_probe_C", 1.0))
    trainer.record_precision()  # fp32: the solver's fit is not autocast
    trainer.train_mode()
    fit_probe_head(trainer.classifier, split.labelled, split.num_classes, C, int(ft.eval_batch_size), trainer.device)
    logger.log({"train/probe_C": C}, 0)


def _finish(trainer: FinetuneTrainer, logger: RunLogger, source: str | None, started: float) -> dict:
    """Best validation state → test accuracy → classifier.pt and the summary."""
    cfg, split, model, best = trainer.cfg, trainer.split, trainer.classifier, trainer.best
    ft, val = cfg.finetune, split.val
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    test_acc, test_loss = accuracy_and_loss(model, split.data.test, int(ft.eval_batch_size), trainer.device)
    if trainer.rank == 0:
        checkpoint.save({"model": model.state_dict(), "config": to_container(cfg), "step": trainer.step},
                        trainer.run_dir / "classifier.pt")
    counts = [len(i) for i in split.per_class]
    summary = {
        "test/accuracy": test_acc, "test/loss": test_loss,
        "val/best_accuracy": best["val_accuracy"] if val is not None else None,
        "best_step": best["step"] if val is not None else trainer.step, "steps_run": trainer.step,
        "solver": "probe" if split.use_probe else "sgd", "early_stopping": val is not None and int(ft.patience) > 0,
        "labelled/train_items": len(split.labelled), "labelled/val_items": 0 if val is None else len(val),
        "labelled/per_class_min": min(counts), "labelled/per_class_max": max(counts),
        "unlabelled_items": len(split.unlabelled) if split.semi else 0, "train_items": len(split.data.train),
        "mode": str(ft.mode), "semi": split.semi, "from_scratch": bool(ft.from_scratch), "labels": ft.labels,
        "data": str(cfg.data.name), "modality": split.modality, "seed": int(ft.seed),
        "trainable_units": [u.name for u, t in zip(trainer.units, trainer.trains) if t],
        "time/seconds": round(time.perf_counter() - started, 2), "folder": str(trainer.run_dir),
        "checkpoint": source,
    }
    logger.log({"test/accuracy": test_acc, "test/loss": test_loss}, trainer.step)
    logger.summary(summary)
    return summary


def run(target: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """``mmssl finetune target overrides…`` as a function: returns the summary."""
    run_dir, ckpt_path, state = checkpoint.find(target)
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
name, seed, device, threads, resume, data=<option>) or of the run's own config (data.batch_size, logger.mode…).
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
