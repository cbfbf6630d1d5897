"""`mmssl report RUNS… [--metric M] [--group-by key.path] [--out DIR]`: multi-seed tables and plots.

Reads run folders (``config.yaml`` + ``metrics.jsonl``/``summary.json``, as written by ``mmssl pretrain``,
``mmssl rl`` and ``mmssl sweep local``; globs and parent folders are searched) or a wandb project
(``--wandb entity/project``). Runs are grouped by every config key that differs between them except the
seed (or by ``--group-by``). For each metric it prints and saves a table — n, mean ± std, IQM and its 95 %
stratified bootstrap CI (``mmssl.eval.stats``) — as markdown and CSV, plots the metric's curve over steps
with bootstrap bands, and draws an rliable-style performance profile.
"""

from __future__ import annotations

import argparse
import csv
import difflib
import glob
import io
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from mmssl.errors import ConfigError, DataError
from mmssl.eval import stats
from mmssl.io import atomic_write, save_figure
from mmssl.logging import console, read_metrics

# keys that differ between runs without making them different experiments
IGNORED_KEYS = ("seed", "run_dir", "resume", "device", "threads", "logger.", "progress", "trainer.progress", "_wandb")
# what to report when --metric is not given: the first one every run has
DEFAULT_METRICS = ("eval_success_rate", "eval/success_rate", "eval/image/ssl/linear_probe_accuracy",
                   r"eval/.*/ssl/linear_probe_accuracy", "eval/linear_probe_accuracy", "eval_return_mean",
                   "charts/episodic_return", "episodic_return", "train/loss")


@dataclass
class Run:
    """One run: flattened config, final metrics and the logged history (one dict per logged step)."""

    name: str
    config: dict
    summary: dict
    history: list[dict] = field(default_factory=list)

    def metric_names(self) -> set[str]:
        names = {k for k, v in self.summary.items() if _is_number(v)}
        return names | {k for rec in self.history for k, v in rec.items() if _is_number(v) and k not in ("step", "time")}

    def final(self, metric: str) -> float | None:
        """The summary value, else the last logged value."""
        if _is_number(self.summary.get(metric)):
            return float(self.summary[metric])
        values = [rec[metric] for rec in self.history if _is_number(rec.get(metric))]
        return float(values[-1]) if values else None

    def curve(self, metric: str) -> tuple[np.ndarray, np.ndarray]:
        pts = [(rec["step"], rec[metric]) for rec in self.history if _is_number(rec.get(metric)) and "step" in rec]
        steps, values = zip(*pts) if pts else ((), ())
        return np.asarray(steps, dtype=float), np.asarray(values, dtype=float)


def _is_number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def flatten(node, prefix: str = "") -> dict:
    """Nested dict → ``{"trainer.lr": 0.001, …}``; lists stay values."""
    out = {}
    for k, v in (node or {}).items():
        if isinstance(v, dict) and v:
            out |= flatten(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


# ---------------------------------------------------------------- loading


def is_run_dir(path: Path) -> bool:
    return (path / "config.yaml").is_file() and ((path / "metrics.jsonl").is_file() or (path / "summary.json").is_file())


def read_run(path: str | Path) -> Run:
    """A run folder's flattened config, summary and metric records, for tables and plots (the model itself:
    ``mmssl.load_run``)."""
    path = Path(path)
    if not is_run_dir(path):
        raise DataError(f"{path} is not a run folder (needs config.yaml and metrics.jsonl or summary.json)")
    try:
        config = yaml.safe_load((path / "config.yaml").read_text()) or {}
        summary = json.loads((path / "summary.json").read_text()) if (path / "summary.json").is_file() else {}
        history = read_metrics(path)
    except (yaml.YAMLError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read run folder {path}: {str(exc).splitlines()[0]}") from None
    return Run(str(path), flatten(config), summary, history)


def find_runs(patterns: list[str]) -> list[Run]:
    """Run folders named by paths or globs; a folder that is not a run is searched for runs below it."""
    runs: list[Run] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not matches or not all(Path(m).exists() for m in matches):
            raise DataError(f"no such run folder: {pattern}")
        for match in map(Path, matches):
            if is_run_dir(match):
                runs.append(read_run(match))
                continue
            found = []
            for root, dirs, _ in os.walk(match):
                dirs[:] = sorted(d for d in dirs if d not in ("wandb", "checkpoints", "plots"))
                if is_run_dir(Path(root)):
                    found.append(read_run(root))
                    dirs[:] = []
            if not found:
                raise DataError(f"{match} is not a run folder and holds none (a run folder has config.yaml and "
                                "metrics.jsonl or summary.json)")
            runs.extend(found)
    return runs


def load_wandb(path: str, keys: list[str] | None = None) -> list[Run]:
    """Finished runs of a wandb project ``entity/project`` (needs a login and the network).

    Summaries hold the final values; the history of each metric in ``keys`` (exact names) is fetched for
    curves, one key at a time because ``scan_history`` keeps only rows that have every requested key.
    """
    try:
        import wandb

        api = wandb.Api(timeout=30)
        remote = list(api.runs(path, filters={"state": "finished"}))
    except Exception as exc:  # noqa: BLE001 - any failure here is a login or network problem for the user
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise ConfigError(f"cannot read wandb runs of {path!r} ({reason}); set WANDB_API_KEY or run `wandb login`, "
                          "or report local run folders instead") from None
    runs = []
    for r in remote:
        summary = {k: v for k, v in r.summary._json_dict.items() if _is_number(v) and not k.startswith("_")}
        history = [{"step": row["_step"], key: row[key]} for key in keys or []
                   for row in r.scan_history(keys=["_step", key])]
        config = flatten({k: v for k, v in r.config.items() if not k.startswith("_")})
        runs.append(Run(f"wandb:{path}/{r.id}", config, summary, history))
    if not runs:
        raise DataError(f"wandb project {path!r} has no finished runs")
    return runs


# ---------------------------------------------------------------- grouping and tables


def resolve_metric(runs: list[Run], metric: str | None) -> str:
    """An exact metric name, a unique suffix of one (``linear_probe_accuracy``), or the default."""
    available = sorted(set().union(*(r.metric_names() for r in runs)))
    if metric is None:
        for pattern in DEFAULT_METRICS:
            hits = [m for m in available if re.fullmatch(pattern, m) and all(r.final(m) is not None for r in runs)]
            if hits:
                return hits[0]
        raise DataError(f"no default metric in these runs; pass --metric, one of: {', '.join(available[:12]) or 'none'}")
    if metric in available:
        return metric
    hits = [m for m in available if m.endswith("/" + metric)]
    if len(hits) == 1:
        return hits[0]
    if hits:
        raise DataError(f"metric {metric!r} is ambiguous ({', '.join(hits)}); pass the full name")
    close = difflib.get_close_matches(metric, available, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else f"available: {', '.join(available[:12]) or 'none'}"
    raise DataError(f"no run has metric {metric!r}; {hint}")


def group_keys(runs: list[Run], by: list[str] | None = None, exclude: tuple[str, ...] = ()) -> list[str]:
    """``by`` (checked to exist), else every config key whose value differs between runs, except seeds."""
    all_keys = sorted(set().union(*(r.config for r in runs)))

    def differs(k):
        return len({json.dumps(r.config.get(k), sort_keys=True, default=str) for r in runs}) > 1

    if by:
        keys = []
        for key in by:
            below = [k for k in all_keys if k.startswith(key + ".")]  # a config group such as `env`
            if key in all_keys:
                keys.append(key)
            elif below:
                keys += [k for k in below if differs(k)] or below[:1]
            else:
                close = difflib.get_close_matches(key, all_keys, n=3, cutoff=0.6)
                raise ConfigError(f"--group-by {key!r} is not a config key of these runs"
                                  + (f"; did you mean {', '.join(close)}?" if close else ""))
        return list(dict.fromkeys(keys))
    ignored = IGNORED_KEYS + exclude
    return [k for k in all_keys if not any(k == i or (i.endswith(".") and k.startswith(i)) for i in ignored)
            and differs(k)]


def _fmt(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def group_runs(runs: list[Run], keys: list[str]) -> dict[tuple, list[Run]]:
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        groups.setdefault(tuple(_fmt(run.config.get(k)) for k in keys), []).append(run)
    return dict(sorted(groups.items(), key=lambda kv: [_sort_key(v) for v in kv[0]]))


def _sort_key(text: str):
    try:
        return (0, float(text), "")
    except ValueError:
        return (1, 0.0, text)


def table(runs: list[Run], metric: str, keys: list[str], task_key: str | None = None, confidence: float = 0.95,
          n_resamples: int = 2000) -> list[dict]:
    """One row per group: the group's key values, n, mean, std, IQM, CI bounds (final values of ``metric``)."""
    rows = []
    for values, members in group_runs(runs, keys).items():
        scored = [r for r in members if r.final(metric) is not None]
        if not scored:
            continue
        tasks: dict[str, list[float]] = {}
        for r in scored:  # stratify the bootstrap over tasks (e.g. environments) when asked
            tasks.setdefault(_fmt(r.config.get(task_key)) if task_key else "", []).append(r.final(metric))
        row = dict(zip(keys, values)) | stats.summarize([np.array(v) for v in tasks.values()], confidence, n_resamples)
        rows.append(row | {"missing": len(members) - len(scored)})
    if not rows:
        raise DataError(f"no run has a value for metric {metric!r}")
    return rows


def markdown(rows: list[dict], metric: str, keys: list[str], confidence: float = 0.95) -> str:
    pct = f"{confidence:.0%}"
    head = [*(keys or ["runs"]), "n", "mean ± std", "IQM", f"IQM {pct} CI"]
    lines = [f"**{metric}** (final value per run; IQM {pct} CI: stratified percentile bootstrap)", "",
             "| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(keys or [1]) + ["---:"] * 4) + "|"]
    for row in rows:
        cells = [row[k] for k in keys] or ["all"]
        cells += [str(row["n"]) + (f" ({row['missing']} missing)" if row["missing"] else ""),
                  f"{row['mean']:.4f} ± {row['std']:.4f}", f"{row['iqm']:.4f}",
                  f"[{row['ci_low']:.4f}, {row['ci_high']:.4f}]"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------- plots


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")


def _label(keys: list[str], values: tuple) -> str:
    return ", ".join(f"{k.split('.')[-1]}={v}" for k, v in zip(keys, values)) or "all runs"


def plot_curves(runs: list[Run], metric: str, keys: list[str], path: Path, confidence: float = 0.95) -> Path | None:
    """IQM of ``metric`` over seeds against step, one line per group with a bootstrap band; None if no curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    drawn = 0
    for values, members in group_runs(runs, keys).items():
        curves = [c for c in (r.curve(metric) for r in members) if c[0].size >= 2]
        if not curves:
            continue
        agg = stats.aggregate_curves(curves, "iqm", confidence=confidence)
        line, = ax.plot(agg["step"], agg["value"], label=f"{_label(keys, values)} (n={len(curves)})")
        ax.fill_between(agg["step"], agg["low"], agg["high"], color=line.get_color(), alpha=0.2, linewidth=0)
        drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("step")
    ax.set_ylabel(f"{metric} (IQM, {confidence:.0%} CI)")
    return _save(fig, ax, path)


def plot_profile(runs: list[Run], metric: str, keys: list[str], path: Path, task_key: str | None = None,
                 confidence: float = 0.95) -> Path:
    """Performance profile: fraction of runs with final ``metric`` > τ, per group, with bootstrap bands."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = {values: [r for r in members if r.final(metric) is not None]
              for values, members in group_runs(runs, keys).items()}
    everything = [r.final(metric) for members in scores.values() for r in members]
    lo, hi = min(everything), max(everything)
    pad = 0.05 * (hi - lo) if hi > lo else 0.05 * max(abs(hi), 1.0)
    taus = np.linspace(lo - pad, hi + pad, 201)
    fig, ax = plt.subplots(figsize=(6, 4))
    for values, members in scores.items():
        if not members:
            continue
        tasks: dict[str, list[float]] = {}
        for r in members:
            tasks.setdefault(_fmt(r.config.get(task_key)) if task_key else "", []).append(r.final(metric))
        profile, low, high = stats.performance_profile_ci([np.array(v) for v in tasks.values()], taus, confidence,
                                                          n_resamples=1000)
        line, = ax.plot(taus, profile, label=f"{_label(keys, values)} (n={len(members)})")
        ax.fill_between(taus, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel(f"{metric} threshold τ")
    ax.set_ylabel("fraction of runs with score > τ")
    ax.set_ylim(-0.02, 1.02)
    return _save(fig, ax, path)


def _save(fig, ax, path: Path) -> Path:
    """Legend below the axes (off the data: one entry per group can be many), light grid, atomic save."""
    import matplotlib.pyplot as plt

    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    ax.grid(alpha=0.3)
    save_figure(fig, path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


# ---------------------------------------------------------------- entry points


def report(runs: list[Run], metrics: list[str | None] | None = None, group_by: list[str] | None = None,
           out: str | Path | None = None, task_key: str | None = None, curves: list[str] | None = None,
           confidence: float = 0.95, n_resamples: int = 2000, plots: bool = True) -> dict:
    """Tables (and plots, files under ``out``) for ``runs``; returns ``{"metrics", "keys", "rows", "markdown", "files"}``."""
    if not runs:
        raise DataError("no runs to report")
    names = [resolve_metric(runs, m) for m in (metrics or [None])]
    keys = group_keys(runs, group_by, exclude=(task_key,) if task_key else ())
    rows = {m: table(runs, m, keys, task_key, confidence, n_resamples) for m in names}
    text = "\n\n".join(markdown(rows[m], m, keys, confidence) for m in names)
    files: list[Path] = []
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "report.md", text + "\n")
        files.append(out / "report.md")
        buffer = io.StringIO(newline="")
        writer = csv.DictWriter(buffer, ["metric", *keys, "n", "missing", "mean", "std", "iqm", "ci_low", "ci_high"])
        writer.writeheader()
        for m in names:
            writer.writerows({"metric": m} | row for row in rows[m])
        atomic_write(out / "report.csv", buffer.getvalue())
        files.append(out / "report.csv")
        if plots:
            curve_metrics = list(dict.fromkeys(names + [resolve_metric(runs, c) for c in curves or []]))
            for m in curve_metrics:
                if (p := plot_curves(runs, m, keys, out / f"curve_{_safe(m)}.png", confidence)) is not None:
                    files.append(p)
            files.append(plot_profile(runs, names[0], keys, out / f"profile_{_safe(names[0])}.png", task_key, confidence))
    return {"metrics": names, "keys": keys, "rows": rows, "markdown": text, "files": files}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="mmssl report", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", help="run folders, globs, or folders holding runs (e.g. a sweep folder)")
    parser.add_argument("--metric", action="append", help="metric to tabulate (repeatable; a unique suffix is enough)")
    parser.add_argument("--group-by", action="append", help="config key(s) to group by (repeatable or comma-separated)")
    parser.add_argument("--task-key", help="config key naming the task (e.g. env.id): the bootstrap is stratified over it")
    parser.add_argument("--curve", action="append", help="extra metric to plot against step (e.g. train/loss)")
    parser.add_argument("--out", default="report", help="folder for report.md, report.csv and the PNG plots")
    parser.add_argument("--wandb", metavar="ENTITY/PROJECT", help="also read the finished runs of a wandb project")
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args(argv)
    if not args.runs and not args.wandb:
        raise ConfigError("name run folders (paths or globs) or --wandb entity/project to report on")
    if not 0 < args.confidence < 1:
        raise ConfigError(f"--confidence must be in (0, 1), got {args.confidence}")
    runs = find_runs(args.runs) if args.runs else []
    if args.wandb:
        runs += load_wandb(args.wandb, [*(args.metric or []), *(args.curve or [])])
    group_by = [k.strip() for g in args.group_by or [] for k in g.split(",") if k.strip()]
    result = report(runs, args.metric, group_by or None, args.out, args.task_key, args.curve, args.confidence,
                    args.resamples, plots=not args.no_plots)
    print(result["markdown"])
    console(f"{len(runs)} runs; wrote {', '.join(str(f) for f in result['files'])}")
