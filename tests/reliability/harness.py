"""SIGKILL harness: fork training children from an already-imported parent, kill them, resume, compare.

Forking (multiprocessing "fork" context) skips the ~5 s import per attempt, so dozens of kills fit in
seconds. ``run_with_kills`` kills at random times; ``kill_inside_save`` blocks a child at a chosen
point of ``checkpoint.save`` (before the rename, between rename and checksum) and kills it there, the
two windows a random kill rarely hits on a tiny model.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from mmssl import checkpoint
from mmssl.logging import RunLogger
from mmssl.train.trainer import Trainer

FORK = mp.get_context("fork")


@dataclass
class KillStats:
    kills: int = 0
    attempts: int = 0
    checkpoints_checked: int = 0
    without_checksum: int = 0  # killed between rename and checksum write: complete, loads, unverified
    leftover_temp_files: int = 0  # killed mid-write: a hidden .tmp file, never a step_*.pt
    corrupt: list[str] = field(default_factory=list)

    def add(self, other: KillStats) -> None:
        for name in ("kills", "attempts", "checkpoints_checked", "without_checksum", "leftover_temp_files"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.corrupt += other.corrupt


def fit(cfg: DictConfig, run_dir: Path) -> Trainer:
    trainer = Trainer(cfg, run_dir)
    logger = RunLogger(run_dir, None, mode="disabled", resume=bool(cfg.resume))
    trainer.fit(logger)
    logger.close()
    return trainer


def _quiet() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)


def _resumable(cfg: DictConfig, run_dir: Path) -> DictConfig:
    """What a user does after a kill: ``resume=true`` once the folder holds a checkpoint; before the first one
    there is nothing to resume and the folder refuses a new run, so it is cleared and started over."""
    cfg = OmegaConf.create(OmegaConf.to_container(cfg))
    cfg.resume = bool(checkpoint.checkpoints(run_dir / "checkpoints"))
    if not cfg.resume and run_dir.exists():
        shutil.rmtree(run_dir)
    return cfg


def pretrain(cfg: DictConfig, run_dir: Path) -> None:
    """The whole `mmssl pretrain` path (run folder, logger, evaluation), not just ``Trainer.fit``."""
    from mmssl.train.pretrain import run

    run(_resumable(cfg, run_dir))


def rl(cfg: DictConfig, run_dir: Path) -> None:
    from mmssl.rl.run import run

    run(_resumable(cfg, run_dir))


def _child(cfg: DictConfig, run_dir: Path, before: Callable[[], None] | None = None, train=fit) -> None:
    _quiet()
    if before is not None:
        before()
    train(cfg, run_dir)


def with_resume(cfg: DictConfig) -> DictConfig:
    cfg = OmegaConf.create(OmegaConf.to_container(cfg))
    cfg.resume = True
    return cfg


def check_checkpoints(ckpt_dir: Path, stats: KillStats) -> None:
    """Every step_*.pt must load (and verify when it has a checksum); count what the kill left behind."""
    for path in checkpoint.checkpoints(ckpt_dir):
        stats.checkpoints_checked += 1
        stats.without_checksum += not path.with_name(path.name + ".sha256").exists()
        try:
            checkpoint.load(path)
        except checkpoint.CheckpointError as exc:
            stats.corrupt.append(str(exc))
    stats.leftover_temp_files = max(stats.leftover_temp_files, len(list(ckpt_dir.glob(".step_*.tmp*"))))


def run_with_kills(cfg: DictConfig, run_dir: Path, kills: int, max_delay: float, seed: int,
                   train: Callable[[DictConfig, Path], object] = fit) -> KillStats:
    """Start (resuming) children and SIGKILL each after U(0, max_delay) s until ``kills`` kills, then finish.

    ``train(cfg, run_dir)`` runs in the child: ``fit`` (pretraining) or ``rl`` (``mmssl rl``'s ``run``).
    """
    rng = torch.Generator().manual_seed(seed)
    cfg = with_resume(cfg)
    stats = KillStats()
    while True:
        stats.attempts += 1
        child = FORK.Process(target=_child, args=(cfg, run_dir, None, train))
        child.start()
        if stats.kills < kills:
            child.join(float(torch.rand((), generator=rng)) * max_delay)
            if child.is_alive():
                os.kill(child.pid, signal.SIGKILL)
                stats.kills += 1
        child.join()
        if child.exitcode not in (0, -signal.SIGKILL):
            raise RuntimeError(f"training child failed with exit code {child.exitcode}")
        check_checkpoints(run_dir / "checkpoints", stats)
        if child.exitcode == 0:  # finished: the run is complete
            return stats


def _block_at_replace(nth_save: int, nth_replace: int, ready) -> Callable[[], None]:
    """Child hook: at save number ``nth_save``, signal ``ready`` and hang at its ``nth_replace``-th os.replace."""

    def install() -> None:
        real_replace, real_save = os.replace, checkpoint.save
        counters = {"save": 0, "replace": 0}

        def save(state, path):
            counters["save"] += 1
            counters["replace"] = 0
            return real_save(state, path)

        def replace(src, dst):
            counters["replace"] += 1
            if counters["save"] == nth_save and counters["replace"] == nth_replace:
                ready.set()
                time.sleep(60)  # the parent kills us here
            return real_replace(src, dst)

        checkpoint.save = save
        os.replace = replace

    return install


def kill_inside_save(cfg: DictConfig, run_dir: Path, nth_save: int, nth_replace: int,
                     train: Callable[[DictConfig, Path], object] = fit) -> KillStats:
    """Kill a (resuming) child while it is inside its ``nth_save``-th checkpoint write, then finish the run.

    ``nth_replace=1``: the file is written and fsynced but not yet renamed; ``2``: renamed, checksum not yet.
    """
    cfg = with_resume(cfg)
    stats = KillStats(attempts=1)
    ready = FORK.Event()
    child = FORK.Process(target=_child, args=(cfg, run_dir, _block_at_replace(nth_save, nth_replace, ready), train))
    child.start()
    if not ready.wait(120):
        child.kill()
        raise RuntimeError("the child never reached the checkpoint write")
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    stats.kills += 1
    check_checkpoints(run_dir / "checkpoints", stats)
    finish = FORK.Process(target=_child, args=(cfg, run_dir, None, train))
    finish.start()
    finish.join()
    stats.attempts += 1
    if finish.exitcode != 0:
        raise RuntimeError(f"resumed child failed with exit code {finish.exitcode}")
    check_checkpoints(run_dir / "checkpoints", stats)
    return stats


def final_state(run_dir: Path) -> dict:
    path, state = checkpoint.latest(run_dir / "checkpoints")
    return state


def assert_identical(reference: Trainer, run_dir: Path) -> None:
    """Model parameters/buffers and optimiser moments of the resumed run equal the uninterrupted run's."""
    state = final_state(run_dir)
    assert int(state["step"]) == reference.step
    ref = reference.model.state_dict()
    assert ref.keys() == state["model"].keys()
    for name, value in ref.items():
        assert torch.equal(value, state["model"][name]), f"{name} differs after kill/resume"
    ref_opt = reference.optimizer.state_dict()["state"]
    for index, moments in ref_opt.items():
        for key, value in moments.items():
            assert torch.equal(value, state["optimizer"]["state"][index][key]), f"optimizer {index}/{key} differs"


def kill_until(make_cfg: Callable[[Path], DictConfig], root: Path, kills: int, max_delay: float, seed: int,
               check: Callable[[Path], None], train: Callable[[DictConfig, Path], object] = fit,
               max_runs: int = 5) -> KillStats:
    """``run_with_kills`` on fresh run folders until ``kills`` kills have landed (a run that outpaces its kill
    schedule on a fast machine simply finishes); ``check(run_dir)`` is called on every finished run."""
    total = KillStats()
    for index in range(max_runs):
        run_dir = root / f"run{index}"
        stats = run_with_kills(make_cfg(run_dir), run_dir, kills - total.kills, max_delay, seed + index, train)
        check(run_dir)
        total.add(stats)
        if total.kills >= kills:
            break
    return total
