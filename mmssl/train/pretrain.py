"""`mmssl pretrain`: compose the config, train, evaluate, write the run folder, print the probe table."""

from __future__ import annotations

import os
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from mmssl.config import compose, to_container
from mmssl.errors import ConfigError
from mmssl.io import atomic_write
from mmssl.logging import RunLogger, console, drop_metrics_after
from mmssl.train import run_folder


def default_run_dir(cfg: DictConfig) -> Path:
    objectives = "+".join(node.name for node in cfg.objective.values()) if cfg.objective else "none"
    return Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{objectives}-{cfg.data.name}"


def run(cfg: DictConfig) -> dict:
    """Train and evaluate ``cfg``; returns the summary (also written to ``summary.json``)."""
    from mmssl.train.trainer import Trainer

    if cfg.run_dir is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("under torchrun every rank must agree on the run folder: pass run_dir=<path>")
    started = time.perf_counter()
    trainer = Trainer(cfg, cfg.run_dir or default_run_dir(cfg))  # builds (and validates) everything before the run folder is touched
    folder = run_folder.claim_on_rank0(trainer.rank, trainer.world, cfg.run_dir, "pretrain", resume=bool(cfg.resume),
                                       config=to_container(cfg), allow=list(cfg.get("resume_override") or []),
                                       default=lambda: default_run_dir(cfg))
    if folder is not None:
        OmegaConf.update(cfg, "run_dir", str(folder.path))
    try:
        return _train(cfg, trainer, Path(cfg.run_dir), folder.resume_from if folder else None, started)
    finally:
        if folder is not None:
            folder.release()


def _train(cfg: DictConfig, trainer, run_dir: Path, resume_from: tuple[Path, dict] | None, started: float) -> dict:
    from mmssl.eval.suite import evaluate, probe_table

    trainer.run_dir, trainer.ckpt_dir = run_dir, run_dir / "checkpoints"
    if cfg.resume and trainer.try_resume(resume_from):  # a checkpoint that does not fit fails here, before config.yaml is rewritten
        drop_metrics_after(run_dir, trainer.step)
    lcfg = cfg.logger
    logger = RunLogger(run_dir, to_container(cfg), mode=lcfg.mode, project=lcfg.project, name=lcfg.name,
                       group=lcfg.group, tags=list(lcfg.tags), resume=bool(cfg.resume), enabled=trainer.rank == 0)
    try:
        trainer.fit(logger)
        if trainer.rank != 0:  # only rank 0 evaluates and reports
            return {"train/steps": trainer.step}
        train_seconds = time.perf_counter() - started
        results = evaluate(trainer.model, trainer.data, cfg, baselines=bool(cfg.eval.baselines), run_dir=run_dir)
        summary = {f"eval/{k}": v for k, v in results.items()} | {
            "train/steps": trainer.step, "train/skipped_steps": trainer.skipped_steps,
            "data/decode_errors": trainer.decode_errors,
            "time/train_seconds": round(train_seconds, 2),
            "time/total_seconds": round(time.perf_counter() - started, 2)}
        logger.log({k: v for k, v in summary.items() if k.startswith("eval/")}, trainer.step)
        logger.summary(summary)
        for png in sorted((run_dir / "plots").glob("*.png")):
            logger.log_file(png, f"plots/{png.stem}")
    finally:
        logger.close()
    table = probe_table(results)
    atomic_write(run_dir / "probes.md", table + "\n")
    print(table)
    console(f"run folder: {run_dir}  ({summary['time/total_seconds']:.0f} s)")
    return summary


def main(overrides: list[str]) -> dict:
    return run(compose("pretrain", overrides))
