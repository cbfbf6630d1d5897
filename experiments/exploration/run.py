"""Exploration comparison on MiniGrid: plain PPO vs PPO + intrinsic rewards, one process, one thread.

    python experiments/exploration/run.py --rewards none rnd e3b counts --seeds 1 2 --frames 30000 \
        -- env=minigrid_doorkey_5x5 agent=ppo_minigrid agent_encoder=minigrid

Each run is ``mmssl rl <overrides> intrinsic=<reward>`` (options from configs/intrinsic/<reward>.yaml;
``--set intrinsic.coef=0.05`` adds overrides to every reward run). Results: one line per run in
results.jsonl and the table printed at the end (success rate of the last 100 training episodes, mean
return and evaluation success).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import scipy.stats
import torch

from mmssl.config import compose
from mmssl.errors import DataError
from mmssl.eval import stats
from mmssl.rl.run import run

HERE = Path(__file__).parent
PALETTE = [f"C{i}" for i in (0, 1, 2, 3, 4, 5, 6, 8, 9)]  # no C7: grey is the reference arm's colour


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rewards", nargs="+", default=["none", "rnd"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1])
    parser.add_argument("--frames", type=int, default=30000)
    parser.add_argument("--set", nargs="*", default=[], help="intrinsic.<key>=<value> overrides for the reward runs")
    parser.add_argument("--tag", default="", help="suffix of the reward's label in the table and run folder")
    parser.add_argument("--table", action="store_true", help="only print the table of --out")
    parser.add_argument("--report", action="store_true",
                        help="--study's table (IQM, 95%% bootstrap CI) → results_<study>.md and curves → <study>.png")
    parser.add_argument("--plot-only", action="store_true",
                        help="only redraw --study's PNGs from its committed results file (no table rewrite)")
    parser.add_argument("--study", default="", help="name of a study: results_<study>.jsonl, runs/exploration/<study>/")
    parser.add_argument("--out", default=None, help="results file (default results[_<study>].jsonl here)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    args.out = args.out or str(HERE / (f"results_{args.study}.jsonl" if args.study else "results.jsonl"))
    runs = Path("runs/exploration") / args.study
    if args.table:
        print(table(args.out))
        return
    if args.plot_only:
        rows = [json.loads(line) for line in open(args.out)]
        if not rows:
            raise DataError(f"{args.out} holds no runs; run the study first")
        for png in plot_study(rows, HERE / f"{args.study or 'results'}.png"):
            print(png)
        return
    if args.report:
        text = report(args.out, runs, HERE / f"{args.study or 'results'}.png")
        Path(args.out).with_suffix(".md").write_text(text + "\n")
        print(text)
        return
    torch.set_num_threads(1)
    for seed in args.seeds:
        for name in args.rewards:
            reward = [] if name == "none" else [f"intrinsic={name}", *args.set]
            label = f"{name}{args.tag}"
            cfg = compose("rl", [*args.overrides, *reward, f"seed={seed}", f"agent.total_timesteps={args.frames}",
                                 f"run_dir={runs / f'{label}-s{seed}'}", "logger.mode=disabled", "progress=false",
                                 "eval.video=false", "checkpoint_every=0"])
            start = time.perf_counter()
            summary = run(cfg)
            record = {"reward": label, "overrides": reward, "seed": seed, "frames": summary["global_step"],
                      "wall_s": round(time.perf_counter() - start, 1),
                      **{k: v for k, v in summary.items() if isinstance(v, int | float | None)},
                      "curve": success_curve(runs / f"{label}-s{seed}", args.frames)}
            with open(args.out, "a") as f:
                f.write(json.dumps(record) + "\n")
            print(json.dumps(record), flush=True)


def success_curve(run_dir: Path, frames: int, bins: int = 40) -> list[list[float]]:
    """Training success rate against frames, from a run's metrics.jsonl: the episodes that ended in each of
    ``bins`` equal frame windows, as [window end, success rate, episodes, cells visited per episode] (success
    null when none ended; cells null where the env does not report them)."""
    edges = np.linspace(0, frames, bins + 1)[1:]
    wins, counts, cells, cell_counts = np.zeros(bins), np.zeros(bins), np.zeros(bins), np.zeros(bins)
    for line in open(run_dir / "metrics.jsonl"):
        row = json.loads(line)
        if row.get("episodes"):
            i = min(int(np.searchsorted(edges, row["global_step"])), bins - 1)
            wins[i] += row["success_rate"] * row["episodes"]
            counts[i] += row["episodes"]
            if row.get("episodic_cells") is not None:
                cells[i] += row["episodic_cells"] * row["episodes"]
                cell_counts[i] += row["episodes"]
    return [[int(e), round(w / c, 4) if c else None, int(c), round(v / n, 2) if n else None]
            for e, w, c, v, n in zip(edges, wins, counts, cells, cell_counts)]


def frames_to(curve: list, level: float) -> int | None:
    """The end of the first frame window whose training success reached ``level`` (None: never)."""
    return next((point[0] for point in curve if point[1] is not None and point[1] >= level), None)


def report(path: str, runs: Path, png: Path, level: float = 0.9) -> str:
    """Study table: per reward, IQM [95% bootstrap CI over seeds] of the final and the area-under-curve training
    success, frames to reach ``level`` success per seed, how many runs end at ``level`` or above (with a one-sided
    Fisher exact test against the ``none`` arm), cells visited per episode at the end (grid worlds),
    evaluation success, bonus and wall-clock per 1M frames; and the curves against frames (IQM over seeds,
    bootstrap band, each seed thin) as ``png`` (success) and ``<png stem>_cells.png`` (cells visited, where the
    runs report them): see :func:`plot_study`."""
    rows = [json.loads(line) for line in open(path)]
    if not rows:
        raise DataError(f"{path} holds no runs; run the study first")
    with_cells = any(len(point) > 3 and point[3] is not None for r in rows for point in r["curve"])

    def iqm_ci(values) -> str:
        s = stats.summarize(np.asarray(values, dtype=float))
        return f"{s['iqm']:.2f} [{s['ci_low']:.2f}, {s['ci_high']:.2f}]" if len(values) > 1 else f"{s['iqm']:.2f}"

    head = (f"| reward | seeds | final success (last 100 train ep.), IQM [95% CI] | success over training (AUC) | "
            f"frames to {level:.0%} success, per seed | runs ending ≥ {level:.0%} (Fisher p vs none) | "
            + ("cells visited per episode, last 10% of frames | " if with_cells else "")
            + "eval success (10 ep.), mean | bonus per step | min per 1M frames |")
    out = [head, "|---|---|---:|---:|---|---|" + ("---:|" if with_cells else "") + "---:|---:|---:|"]
    baseline = [r["train_success_last100"] >= level for r in rows if r["reward"] == "none"]
    for name in dict.fromkeys(r["reward"] for r in rows):
        rs = sorted((r for r in rows if r["reward"] == name), key=lambda r: r["seed"])
        curves = [curve_column(r["curve"], 1) for r in rs]
        auc = [float(np.mean([success for _, success in c])) for c in curves]
        reached = [frames_to(r["curve"], level) for r in rs]
        bonus = [curve_stats(runs / f"{name}-s{r['seed']}")["bonus_per_step"] for r in rs
                 if (runs / f"{name}-s{r['seed']}" / "metrics.jsonl").exists()]
        cells = [curve_column(r["curve"], 3) for r in rs]
        ended = sum(r["train_success_last100"] >= level for r in rs)
        test = ""
        if baseline and name != "none":
            table = [[ended, len(rs) - ended], [sum(baseline), len(baseline) - sum(baseline)]]
            test = f" (p = {scipy.stats.fisher_exact(table, alternative='greater').pvalue:.2f})"
        final_cells = [float(np.mean([v for end, v in c if end > 0.9 * r["frames"]] or [np.nan]))
                       for r, c in zip(rs, cells) if c]
        out.append(f"| {name} | {', '.join(str(r['seed']) for r in rs)} | "
                   f"{iqm_ci([r['train_success_last100'] for r in rs])} | {iqm_ci(auc)} | "
                   f"{', '.join(f'{f / 1e6:.2f}M' if f else 'not reached' for f in reached)} | "
                   f"{ended}/{len(rs)}{test} | "
                   + (f"{iqm_ci(final_cells) if final_cells else 'n/a'} | " if with_cells else "") +
                   f"{np.mean([r['eval_success_rate'] for r in rs]):.2f} | "
                   f"{f'{np.mean(bonus):.1e}' if bonus else 'n/a'} | "
                   f"{np.mean([r['wall_s'] / r['frames'] * 1e6 / 60 for r in rs]):.1f} |")
    plot_study(rows, png)
    return "\n".join(out)


def plot_study(rows: list[dict], png: Path) -> list[Path]:
    """Small multiples from a study's results file: one panel per reward (its IQM over seeds, the shaded 95%
    percentile-bootstrap band over seeds, each seed thin) with the ``none`` arm's IQM dashed grey in every
    other panel as the reference; shared axes, the key below the panels. Training success (axis [0, 1]) goes
    to ``png``; distinct cells visited per episode (axis from 0) to ``<png stem>_cells.png`` when the runs
    report it. Returns the files written."""
    written = [png]
    _small_multiples(rows, 1, png, "training success rate", (0, 1.02))
    if any(len(point) > 3 and point[3] is not None for r in rows for point in r["curve"]):
        cells = png.with_name(f"{png.stem}_cells.png")
        _small_multiples(rows, 3, cells, "distinct cells visited per episode", (0, None))
        written.append(cells)
    return written


def _small_multiples(rows: list[dict], column: int, png: Path, what: str, ylim: tuple) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    names = sorted(dict.fromkeys(r["reward"] for r in rows), key=lambda name: name != "none")  # none first
    ncols = 3 if len(names) % 4 and not len(names) % 3 else min(4, len(names))  # a full grid where one fits
    nrows = -(-len(names) // ncols)
    key_rows = 1 if ncols >= 3 else 2
    height = 2.3 * nrows + 0.3 + 0.2 * key_rows  # the key's strip below the panels
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.1 * ncols, height), sharex=True, sharey=True, squeeze=False)
    reference = None
    if "none" in names:
        base = [curve_column(r["curve"], column) for r in rows if r["reward"] == "none"]
        base = [c for c in base if len(c) >= 2]
        reference = stats.aggregate_curves([tuple(map(np.array, zip(*c))) for c in base], "iqm") if base else None
    for i, name in enumerate(names):
        ax = axes.flat[i]
        rs = [r for r in rows if r["reward"] == name]
        curves = [c for c in (curve_column(r["curve"], column) for r in rs) if len(c) >= 2]
        if reference is not None and name != "none":
            ax.plot(reference["step"] / 1e6, reference["value"], color="0.45", linestyle="--", linewidth=1.2)
        if curves:
            plot_curves(ax, curves, name, color="black" if name == "none" else PALETTE[i % len(PALETTE)])
        ax.set_title(f"{name} (n={len(rs)})", fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for ax in axes.flat[max(0, len(names) - ncols):len(names)]:  # the lowest panel of each column
        ax.set_xlabel("frames (millions)", fontsize=8)
        ax.xaxis.set_tick_params(labelbottom=True)
    axes[0, 0].set_ylim(*ylim)
    axes[0, 0].set_xlim(left=0)
    fig.supylabel(f"{what}\n(IQM over seeds)", fontsize=9)
    key = [Line2D([], [], color="C0", linewidth=2, label="IQM over seeds"),
           Patch(color="C0", alpha=0.15, label="shaded: 95% bootstrap CI over seeds"),
           Line2D([], [], color="C0", linewidth=0.7, alpha=0.6, label="thin: each seed")]
    if reference is not None:
        key.append(Line2D([], [], color="0.45", linestyle="--", label="dashed: none (plain PPO), IQM"))
    fig.tight_layout(rect=(0, (0.3 + 0.2 * key_rows) / height, 1, 1))
    fig.legend(handles=key, loc="lower center", ncol=-(-len(key) // key_rows), fontsize=8, frameon=False)
    fig.savefig(png, dpi=110)
    plt.close(fig)


def curve_column(curve: list, column: int) -> list[tuple[int, float]]:
    """(window end, value) of a stored curve's ``column`` (1 success, 3 cells visited), skipping empty windows."""
    return [(point[0], point[column]) for point in curve if len(point) > column and point[column] is not None]


def plot_curves(ax, curves: list, label: str, color=None):
    """IQM over seeds with its bootstrap band, and each seed thin (with few seeds the band hides whether runs
    solve the task or not); returns the line colour."""
    agg = stats.aggregate_curves([tuple(map(np.array, zip(*c))) for c in curves if len(c) >= 2], "iqm")
    line, = ax.plot(agg["step"] / 1e6, agg["value"], label=label, color=color)
    ax.fill_between(agg["step"] / 1e6, agg["low"], agg["high"], color=line.get_color(), alpha=0.15, linewidth=0)
    for c in curves:
        ax.plot([end / 1e6 for end, _ in c], [v for _, v in c], color=line.get_color(), linewidth=0.7, alpha=0.45)
    return line.get_color()


def curve_stats(run_dir: Path) -> dict:
    """From a run's metrics.jsonl: mean training success over all updates (area under the success curve)
    and the mean per-step intrinsic bonus actually added to the reward."""
    rows = [json.loads(line) for line in open(run_dir / "metrics.jsonl")]
    success = [r["success_rate"] for r in rows if r.get("success_rate") is not None]
    bonus = [v for r in rows for k, v in r.items() if k.startswith("intrinsic/") and k.endswith("/bonus_mean")]
    return {"success_auc": float(np.mean(success)) if success else 0.0,
            "bonus_per_step": float(np.mean(bonus)) if bonus else 0.0}


def table(path: str) -> str:
    """Markdown table: mean ± std over seeds per reward."""
    rows = [json.loads(line) for line in open(path)]
    for r in rows:  # the curve statistics need the run folders (runs/ is not versioned): n/a without them
        run_dir = Path("runs/exploration") / f"{r['reward']}-s{r['seed']}"
        r |= curve_stats(run_dir) if (run_dir / "metrics.jsonl").exists() else {}
    out = ["| reward | seeds | success, last 100 train episodes | success over training (AUC) | eval success "
           "(10 ep.) | bonus per step | env steps/s |", "|---|---|---|---|---|---|---|"]
    for name in dict.fromkeys(r["reward"] for r in rows):
        rs = [r for r in rows if r["reward"] == name]

        def stat(key, rs=rs, fmt=".2f"):
            vals = [r[key] for r in rs if r.get(key) is not None]
            return f"{np.mean(vals):{fmt}} ± {np.std(vals):{fmt}}" if vals else "n/a"

        out.append(f"| {name} | {', '.join(str(r['seed']) for r in rs)} | {stat('train_success_last100')} | "
                   f"{stat('success_auc')} | {stat('eval_success_rate')} | {stat('bonus_per_step', fmt='.1e')} | "
                   f"{np.mean([r['env_steps_per_second'] for r in rs]):.0f} |")
    return "\n".join(out)


if __name__ == "__main__":
    main()
