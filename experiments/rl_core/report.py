"""Results table and curves of the learning-target runs (``queue.sh`` writes them under runs/rl_core/).

    python experiments/rl_core/report.py                # runs/rl_core/* → results.json, curves.csv, PNGs, table
    python experiments/rl_core/report.py --plot-only    # PNGs again from the committed curves.csv

The run folders (config, per-update metrics.jsonl, summary.json, eval GIF) stay under runs/ (not versioned);
what is kept here is their summary: ``results.json`` (one row per run, from its summary.json) and
``curves.csv`` (per run, the training metric averaged over ``BINS`` equal frame windows:
``study,run,seed,frames,value``, ``frames`` the window's end). The plots are drawn from curves.csv only, so
``--plot-only`` reproduces them without the runs.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from mmssl.errors import DataError
from mmssl.logging import read_metrics

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
BINS = 50
#: plot name → (run-name prefix, metric, axis label, whether the metric is a fraction in [0, 1])
STUDIES = {"cartpole": ("cartpole", "episodic_return", "episodic return", False),
           "doorkey": ("doorkey", "success_rate", "success rate", True),
           "halfcheetah": ("halfcheetah", "episodic_return", "episodic return", False),
           "doorkey_pixels": ("doorkey_pixels", "success_rate", "success rate", True),
           "doorkey_pixels_curl": ("doorkey_pixels_curl", "success_rate", "success rate", True)}
#: summary.json keys → results.json columns
COLUMNS = {"global_step": "frames", "train_return_last100": "train_return_last100",
           "train_success_last100": "train_success_last100", "eval_return_mean": "eval_return_mean",
           "eval_return_std": "eval_return_std", "eval_success_rate": "eval_success_rate",
           "probe_state_r2": "probe_state_r2", "env_steps_per_second": "env_steps_per_second",
           "train_wall_clock_s": "train_wall_clock_s"}


def binned(records: list[dict], key: str, frames: int, bins: int = BINS) -> list[tuple[int, float]]:
    """(window end, mean of ``key`` over the updates logged in the window) for ``bins`` equal frame windows of
    [0, frames]; empty windows are left out."""
    edges = np.linspace(0, frames, bins + 1)
    points = [(r["global_step"], r[key]) for r in records if r.get(key) is not None]
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        vals = [v for s, v in points if lo < s <= hi]
        if vals:
            out.append((int(hi), float(np.mean(vals))))
    return out


def summarise(runs: Path) -> tuple[list[dict], list[dict]]:
    """results.json rows and curves.csv rows from the finished run folders under ``runs``."""
    rows, curves = [], []
    for study, (prefix, key, _, _) in STUDIES.items():
        for run in sorted(runs.glob(f"{prefix}_s*")):
            if not (run / "summary.json").exists():
                continue
            s = json.loads((run / "summary.json").read_text())
            seed = int(run.name.rsplit("_s", 1)[1])
            rows.append({"study": study, "run": run.name, "seed": seed,
                         **{col: s.get(k) for k, col in COLUMNS.items()}})
            curves += [{"study": study, "run": run.name, "seed": seed, "frames": f, "value": round(v, 6)}
                       for f, v in binned(read_metrics(run), key, s["global_step"])]
    if not rows:
        raise DataError(f"no finished run (summary.json) under {runs}; run queue.sh first")
    return rows, curves


def plot(curves: list[dict], out: Path) -> list[Path]:
    """One PNG per study: each seed's binned curve and their mean across seeds; legend outside the axes;
    fractions on a [0, 1] axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for study, (_, _, label, fraction) in STUDIES.items():
        runs = sorted({r["run"] for r in curves if r["study"] == study})
        if not runs:
            continue
        fig, ax = plt.subplots(figsize=(6.4, 3.4))
        per_seed = []
        for run in runs:
            pts = [(r["frames"], r["value"]) for r in curves if r["run"] == run]
            x, y = map(np.array, zip(*pts))
            per_seed.append((x, y))
            ax.plot(x, y, linewidth=0.9, alpha=0.6, label=f"seed {run.rsplit('_s', 1)[1]}")
        grid = per_seed[0][0]
        mean = np.mean([np.interp(grid, x, y) for x, y in per_seed], axis=0)
        ax.plot(grid, mean, color="black", linewidth=2, label=f"mean of {len(runs)} seeds")
        ax.set_xlabel("env steps (frames)")
        ax.set_ylabel(f"training {label}\n(mean per 1/{BINS} of the frames)")
        ax.set_xlim(left=0)
        if fraction:
            ax.set_ylim(0, 1.02)
        elif min(v for _, y in per_seed for v in y) >= 0:
            ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)
        fig.tight_layout()
        path = out / f"{study}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written


def table(rows: list[dict]) -> str:
    head = ["run", "frames", "train return (last 100 ep.)", "train success", "eval return (10 ep.)", "eval success",
            "state probe R²", "env-steps/s", "wall-clock s"]
    keys = ["run", "frames", "train_return_last100", "train_success_last100", "eval_return_mean",
            "eval_success_rate", "probe_state_r2", "env_steps_per_second", "train_wall_clock_s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join("—" if r[k] is None else f"{r[k]:.3g}" if isinstance(r[k], float)
                                       else str(r[k]) for k in keys) + " |")
    return "\n".join(lines)


def read_curves(path: Path) -> list[dict]:
    if not path.exists():
        raise DataError(f"{path} does not exist; run report.py without --plot-only first")
    with open(path, newline="") as f:
        return [{**r, "seed": int(r["seed"]), "frames": int(r["frames"]), "value": float(r["value"])}
                for r in csv.DictReader(f)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "rl_core", help="folder holding the run folders")
    parser.add_argument("--out", type=Path, default=HERE, help="where results.json, curves.csv and the PNGs go")
    parser.add_argument("--plot-only", action="store_true", help="only redraw the PNGs from <out>/curves.csv")
    args = parser.parse_args(argv)
    if args.plot_only:
        plot(read_curves(args.out / "curves.csv"), args.out)
        return
    rows, curves = summarise(args.runs)
    (args.out / "results.json").write_text(json.dumps(rows, indent=1) + "\n")
    with open(args.out / "curves.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["study", "run", "seed", "frames", "value"])
        writer.writeheader()
        writer.writerows(curves)
    plot(curves, args.out)
    text = table(rows)
    (args.out / "results.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
