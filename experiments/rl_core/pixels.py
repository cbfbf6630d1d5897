"""Pixel PPO with and without an auxiliary self-supervised objective, at equal frames.

    python experiments/rl_core/pixels.py --seeds 1 2 3 --frames 20000 --arms plain curl

Each arm is ``mmssl rl env=minigrid_pixels agent=ppo_minigrid agent_encoder=impala_cnn [objective=rl_<arm>]``
on ``--env-id`` rendered at ``--tile`` pixels per cell (egocentric 7×7 view → (3, 7·tile, 7·tile) uint8),
evaluated every 5 updates on 20 fixed-seed episodes. Runs are separate processes (one torch thread)
under runs/rl_core/pixels_<arm>_s<seed> (not versioned); a finished run (summary.json) is reused. Writes
pixels.md (final and early evaluation return/success, IQM with bootstrap CIs), pixels_curves.csv (the
curves: IQM and 95% CI over seeds per evaluation) and pixels.png from it (``--plot-only`` redraws it).
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


def plot(curves: list[dict], title: str, path: Path) -> None:
    """Evaluation return against frames per arm (IQM over seeds, shaded 95% bootstrap CI), legend outside."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.6, 3.8))
    for arm in dict.fromkeys(r["arm"] for r in curves):
        rs = [r for r in curves if r["arm"] == arm]
        x = [r["frames"] for r in rs]
        line, = ax.plot(x, [r["iqm"] for r in rs], label=f"{arm} (n={rs[0]['seeds']})")
        ax.fill_between(x, [r["ci_low"] for r in rs], [r["ci_high"] for r in rs], alpha=0.2, color=line.get_color(),
                        linewidth=0)
    ax.set(xlabel="frames", ylabel="evaluation return, IQM over seeds\n(shaded: 95% bootstrap CI over seeds)")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=8)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(arms: list[str], seeds: list[int], title: str) -> str:
    """pixels.md (table), pixels_curves.csv (per arm and evaluation point: IQM and 95% CI over seeds) and
    pixels.png drawn from that CSV (``--plot-only`` redraws it without the runs)."""
    from mmssl.eval import stats

    lines = ["| arm | runs | eval return, first half IQM [95% CI] | eval return at the end, IQM [95% CI] "
             "| eval success at the end (mean) | env-steps/s |", "|---|---|---|---|---|---|"]
    rows = []
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
        lo, hi = stats.bootstrap_ci(half)
        flo, fhi = stats.bootstrap_ci(final)
        lines.append(f"| {arm} | {len(done)} | {stats.iqm(half):.3f} [{lo:.3f}, {hi:.3f}] "
                     f"| {stats.iqm(final):.3f} [{flo:.3f}, {fhi:.3f}] | {success:.2f} "
                     f"| {np.mean([s['env_steps_per_second'] for s in summaries]):.0f} |")
    with open(HERE / "pixels_curves.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["arm", "seeds", "frames", "iqm", "ci_low", "ci_high"])
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, title, HERE / "pixels.png")
    table = "\n".join(lines)
    (HERE / "pixels.md").write_text(f"{title}\n\n{table}\n")
    return table


def read_curves(path: Path) -> list[dict]:
    if not path.exists():
        sys.exit(f"error: {path} does not exist; run pixels.py without --plot-only first")
    with open(path, newline="") as f:
        return [{"arm": r["arm"], "seeds": int(r["seeds"]), "frames": int(r["frames"]),
                 **{k: float(r[k]) for k in ("iqm", "ci_low", "ci_high")}} for r in csv.DictReader(f)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--frames", type=int, default=20_000)
    parser.add_argument("--arms", nargs="+", default=["plain", "curl"])
    parser.add_argument("--env-id", default="MiniGrid-Empty-5x5-v0")
    parser.add_argument("--tile", type=int, default=4)
    parser.add_argument("--report", action="store_true", help="only rebuild table, CSV and plot from the runs")
    parser.add_argument("--plot-only", action="store_true", help="only redraw pixels.png from pixels_curves.csv")
    args = parser.parse_args()
    title = (f"{args.env_id}, pixels ({7 * args.tile}×{7 * args.tile}), {args.frames:,} frames, "
             f"seeds {args.seeds}")
    if args.plot_only:
        plot(read_curves(HERE / "pixels_curves.csv"), title, HERE / "pixels.png")
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
    print(report(args.arms, args.seeds, title))


if __name__ == "__main__":
    main()
