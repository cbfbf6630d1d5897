"""Pixel PPO with and without an auxiliary self-supervised objective, at equal frames.

    python experiments/rl_core/pixels.py --seeds 1 2 3 --frames 20000 --arms plain curl

Each arm is ``mmssl rl env=minigrid_pixels agent=ppo_minigrid agent_encoder=impala_cnn [objective=rl_<arm>]``
on ``--env-id`` rendered at ``--tile`` pixels per cell (egocentric 7×7 view → (3, 7·tile, 7·tile) uint8),
evaluated every 5 updates on 20 fixed-seed episodes. Runs are separate processes (one torch thread)
under runs/rl_core/pixels_<arm>_s<seed> (not versioned); a finished run (summary.json) is reused. Writes
pixels.json and pixels.md (final and early evaluation return/success, IQM with bootstrap CIs), pixels_curves.csv
(the curves: IQM and 95% CI over seeds per evaluation) and pixels.png from pixels.json (``--plot-only`` redraws
it from the committed pixels.json alone).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
ROOT = HERE.parent.parent


def command(arm: str, seed: int, args) -> list[str]:
    cmd = ["mmssl", "rl", "env=minigrid_pixels", f"env.kwargs.env_id={args.env_id}", f"env.kwargs.tile_size={args.tile}",
           "agent=ppo_minigrid", "agent_encoder=impala_cnn", f"agent.total_timesteps={args.frames}", f"seed={seed}",
           "threads=1", "logger.mode=disabled", "progress=false", "eval.every=5", "eval.episodes=20",
           "eval.probe_episodes=0", "eval.video=false", f"run_dir={run_dir(arm, seed)}"]
    return cmd + ([] if arm == "plain" else [f"objective=rl_{arm}"])


def run_dir(arm: str, seed: int) -> Path:
    return ROOT / "runs" / "rl_core" / f"pixels_{arm}_s{seed}"


def curve(folder: Path, key: str) -> tuple[np.ndarray, np.ndarray]:
    from mmssl.logging import metric_curve

    steps, values = metric_curve(folder, key)
    return np.array(steps), np.array(values)


def plot(summary: dict, path: Path) -> None:
    """One idea: the auxiliary objectives speed up early learning, and every arm ends solved. Per arm, the
    evaluation return averaged over the first half of training and at the end (IQM over seeds, bars: 95%
    bootstrap CI over seeds), on [0, 1]; the key below the axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary["arms"]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(5.2, 4.2))
    for offset, (key, label, marker) in zip((-0.12, 0.12), (("early", "first half of training (mean of the curve)", "o"),
                                                         ("final", f"at the end ({summary['frames']:,} frames)", "s"))):
        iqm = np.array([r[f"{key}_iqm"] for r in rows])
        ci = np.array([r[f"{key}_ci"] for r in rows])
        ax.errorbar(x + offset, iqm, yerr=[iqm - ci[:, 0], ci[:, 1] - iqm], fmt=marker, capsize=4, label=label)
    ax.set_xticks(x, [f"{r['arm']} (n={r['runs']})" for r in rows])
    ax.set(ylabel="evaluation return, IQM over seeds", ylim=(0, 1.02), xlim=(-0.5, len(rows) - 0.5))
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(summary["title"], fontsize=8)
    handles, labels = ax.get_legend_handles_labels()
    handles.append(plt.Line2D([], [], color="black", marker="|", ls="", markersize=10))
    labels.append(f"bars: 95% bootstrap CI over {rows[0]['runs']} seeds")
    ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.1), frameon=False, fontsize=8)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def report(arms: list[str], seeds: list[int], title: str, frames: int) -> str:
    """pixels.json (per arm: early and final evaluation return, IQM with 95% bootstrap CIs; committed),
    pixels.md (the same as a table), pixels_curves.csv (per arm and evaluation point: IQM and 95% CI over
    seeds) and pixels.png drawn from pixels.json (``--plot-only`` redraws it without the runs)."""
    from mmssl.eval import stats

    lines = ["| arm | runs | eval return, first half IQM [95% CI] | eval return at the end, IQM [95% CI] "
             "| eval success at the end (mean) | env-steps/s |", "|---|---|---|---|---|---|"]
    rows, summary = [], {"title": title, "frames": frames, "arms": []}
    for arm in arms:
        done = [s for s in seeds if (run_dir(arm, s) / "summary.json").exists()]
        if not done:
            continue
        curves = [curve(run_dir(arm, s), "eval/return_mean") for s in done]
        steps = curves[0][0]
        aligned = np.stack([np.interp(steps, x, y) for x, y in curves])
        for step, col in zip(steps, aligned.T):
            lo, hi = stats.bootstrap_ci(col)
            rows.append({"arm": arm, "seeds": len(done), "frames": int(step), "iqm": round(float(stats.iqm(col)), 5),
                         "ci_low": round(float(lo), 5), "ci_high": round(float(hi), 5)})
        half = aligned[:, : max(1, aligned.shape[1] // 2)].mean(1)  # area under the first half of the curve
        final = aligned[:, -1]
        summaries = [json.loads((run_dir(arm, s) / "summary.json").read_text()) for s in done]
        success = np.mean([c[1][-1] for c in (curve(run_dir(arm, s), "eval/success_rate") for s in done)])
        row = {"arm": arm, "runs": len(done), "early_iqm": float(stats.iqm(half)),
               "early_ci": [float(v) for v in stats.bootstrap_ci(half)], "final_iqm": float(stats.iqm(final)),
               "final_ci": [float(v) for v in stats.bootstrap_ci(final)], "final_success_mean": float(success),
               "env_steps_per_second": float(np.mean([s["env_steps_per_second"] for s in summaries]))}
        summary["arms"].append(row)
        lines.append(f"| {arm} | {len(done)} | {row['early_iqm']:.3f} [{row['early_ci'][0]:.3f}, {row['early_ci'][1]:.3f}] "
                     f"| {row['final_iqm']:.3f} [{row['final_ci'][0]:.3f}, {row['final_ci'][1]:.3f}] | {success:.2f} "
                     f"| {row['env_steps_per_second']:.0f} |")
    with open(HERE / "pixels_curves.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["arm", "seeds", "frames", "iqm", "ci_low", "ci_high"])
        writer.writeheader()
        writer.writerows(rows)
    (HERE / "pixels.json").write_text(json.dumps(summary, indent=1) + "\n")
    plot(summary, HERE / "pixels.png")
    table = "\n".join(lines)
    (HERE / "pixels.md").write_text(f"{title}\n\n{table}\n")
    return table


def read_summary(path: Path) -> dict:
    if not path.exists():
        sys.exit(f"error: {path} does not exist; run pixels.py without --plot-only first")
    return json.loads(path.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--frames", type=int, default=20_000)
    parser.add_argument("--arms", nargs="+", default=["plain", "curl"])
    parser.add_argument("--env-id", default="MiniGrid-Empty-5x5-v0")
    parser.add_argument("--tile", type=int, default=4)
    parser.add_argument("--report", action="store_true", help="only rebuild table, CSV and plot from the runs")
    parser.add_argument("--plot-only", action="store_true", help="only redraw pixels.png from pixels.json")
    args = parser.parse_args()
    title = (f"{args.env_id}, pixels ({7 * args.tile}×{7 * args.tile}), {args.frames:,} frames, "
             f"seeds {args.seeds}")
    if args.plot_only:
        plot(read_summary(HERE / "pixels.json"), HERE / "pixels.png")
        return
    if not args.report:
        for seed in args.seeds:
            for arm in args.arms:
                if (run_dir(arm, seed) / "summary.json").exists():
                    continue
                code = subprocess.call(command(arm, seed, args), cwd=ROOT)
                if code:
                    sys.exit(f"{arm} seed {seed} failed with exit code {code}")
                print(f"{arm} seed {seed} done", flush=True)
    print(report(args.arms, args.seeds, title, args.frames))


if __name__ == "__main__":
    main()
