"""Run folders and wandb.

Every run writes ``config.yaml``, ``metrics.jsonl`` (one JSON object per logged step), checkpoints and
plots into its own folder, so nothing depends on the network. wandb mirrors the metrics when its mode
is ``online`` or ``offline``; ``auto`` means online with an API key and offline without one. A run
never dies because of logging: any wandb failure falls back to offline (then disabled) with a warning.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

import yaml

from mmssl.errors import ConfigError
from mmssl.io import atomic_write


def _clean(value):
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class RunLogger:
    """Local metrics file plus optional wandb; ``log(metrics, step)``, ``close()``."""

    def __init__(self, run_dir: str | Path, config: dict | None = None, mode: str = "auto",
                 project: str = "mmssl", name: str | None = None, group: str | None = None,
                 tags: list[str] | None = None, enabled: bool = True, resume: bool = False):
        self.run_dir = Path(run_dir)
        self.enabled = enabled  # False on non-zero ranks: they log nothing
        self.wandb_run = None
        self.mode = self._resolve_mode(mode)  # validate before the run folder is touched
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if config is not None:
            atomic_write(self.run_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False))
            from mmssl.provenance import environment

            atomic_write(self.run_dir / "environment.json", json.dumps(environment(), indent=1) + "\n")
        self._metrics = open(self.run_dir / "metrics.jsonl", "a" if resume else "w")
        if self.mode != "disabled":
            self._start_wandb(config, project, name or self.run_dir.name, group, tags)

    @staticmethod
    def _resolve_mode(mode: str) -> str:
        env = os.environ.get("WANDB_MODE", "").strip()  # an empty WANDB_MODE means unset
        if mode == "auto" and env:
            if env not in ("online", "offline", "disabled", "dryrun", "run"):
                raise ConfigError(f"environment variable WANDB_MODE={env!r} is not a wandb mode; set it to online, "
                                  "offline or disabled, or unset it")
            return {"dryrun": "offline", "run": "online"}.get(env, env)  # wandb's older spellings
        if mode == "auto":
            return "online" if os.environ.get("WANDB_API_KEY") else "offline"
        if mode not in ("online", "offline", "disabled"):
            raise ConfigError(f"logger.mode must be auto, online, offline or disabled, got {mode!r}")
        return mode

    def _start_wandb(self, config, project, name, group, tags) -> None:
        for mode in dict.fromkeys([self.mode, "offline"]):
            try:
                import wandb

                settings = wandb.Settings(silent=True, init_timeout=30)
                self.wandb_run = wandb.init(project=project, name=name, group=group, tags=tags, config=config,
                                            dir=str(self.run_dir), mode=mode, settings=settings, reinit="create_new")
                self.mode = mode
                return
            except Exception as exc:  # noqa: BLE001 - logging must never kill a run
                warnings.warn(f"wandb {mode} failed ({str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__}); "
                              "falling back", stacklevel=3)
        self.mode = "disabled"

    def log(self, metrics: dict, step: int) -> None:
        if not self.enabled:
            return
        record = {"step": step, "time": round(time.time(), 3)} | {k: _clean(v) for k, v in metrics.items()}
        self._metrics.write(json.dumps(record) + "\n")
        self._metrics.flush()
        if self.wandb_run is not None:
            try:
                self.wandb_run.log({k: v for k, v in record.items() if k not in ("step", "time")}, step=step)
            except Exception as exc:  # noqa: BLE001
                warnings.warn(f"wandb log failed ({exc}); continuing with local logging only", stacklevel=2)
                self.wandb_run = None

    def log_file(self, path: str | Path, key: str) -> None:
        """Attach an image (PNG) or video file to the wandb run, if any."""
        if self.wandb_run is None:
            return
        try:
            import wandb

            media = wandb.Video(str(path)) if str(path).endswith((".mp4", ".gif")) else wandb.Image(str(path))
            self.wandb_run.log({key: media})
        except Exception as exc:  # noqa: BLE001
            warnings.warn(f"wandb could not attach {path} ({exc})", stacklevel=2)

    def summary(self, values: dict) -> None:
        if not self.enabled:
            return
        atomic_write(self.run_dir / "summary.json", json.dumps({k: _clean(v) for k, v in values.items()}, indent=2))
        if self.wandb_run is not None:
            try:
                self.wandb_run.summary.update(values)
            except Exception:  # noqa: BLE001
                pass

    def close(self) -> None:
        if not self.enabled:
            return
        self._metrics.close()
        if self.wandb_run is not None:
            try:
                self.wandb_run.finish(quiet=True)
            except Exception:  # noqa: BLE001
                pass


def drop_metrics_after(run_dir: str | Path, step: int) -> None:
    """Remove metrics.jsonl records past ``step`` (logged after the checkpoint a killed run resumes from),
    so the resumed run does not log them twice; atomic, and a torn last line (killed mid-write) is dropped."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines(keepends=True):
        try:
            if json.loads(line).get("step", 0) <= step:
                kept.append(line if line.endswith("\n") else line + "\n")
        except json.JSONDecodeError:
            continue
    atomic_write(path, "".join(kept))


def read_metrics(run_dir: str | Path) -> list[dict]:
    """Every complete record of a run's ``metrics.jsonl`` (a run killed mid-write leaves a torn last line)."""
    path = Path(run_dir) / "metrics.jsonl"
    records = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def metric_curve(run_dir: str | Path, key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of ``key`` in a run's metrics.jsonl, by step (a step logged twice keeps its last value)."""
    points = sorted({r["step"]: r[key] for r in read_metrics(run_dir) if key in r}.items())
    return [s for s, _ in points], [v for _, v in points]


def console(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
