"""Pixel PPO with and without an auxiliary self-supervised objective, at equal frames.

    python experiments/rl_core/pixels.py --seeds 1 2 3 --frames 20000 --arms plain curl

Each arm is ``mmssl rl env=minigrid_pixels agent=ppo_minigrid agent_encoder=impala_cnn [objective=rl_<arm>]``
on ``--env-id`` rendered at ``--tile`` pixels per cell (egocentric 7×7 view → (3, 7·tile, 7·tile) uint8),
evaluated every 5 updates on 20 fixed-seed episodes. Runs are separate processes (one torch thread)
under experiments/rl_core/runs/pixels_<arm>_s<seed>; a finished run (summary.json) is reused. Writes
pixels.md (final and early evaluation return/success, IQM with bootstrap CIs) and pixels.png (curves).
"""

from __future__ import annotations

import argparse
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
    return HERE / "runs" / f"pixels_{arm}_s{seed}"


def curve(folder: Path, key: str) -> tuple[np.ndarray, np.ndarray]:
    from mmssl.logging import metric_curve

    steps, values = metric_curve(folder, key)
    return np.array(steps), np.array(values)


def report(arms: list[str], seeds: list[int], title: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mmssl.eval import stats

    lines = ["| arm | runs | eval return, first half IQM [95% CI] | eval return at the end, IQM [95% CI] "
             "| eval success at the end (mean) | env-steps/s |", "|---|---|---|---|---|---|"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for arm in arms:
        done = [s for s in seeds if (run_dir(arm, s) / "summary.json").exists()]
        if not done:
            continue
        curves = [curve(run_dir(arm, s), "eval/return_mean") for s in done]
        steps = curves[0][0]
        aligned = np.stack([np.interp(steps, x, y) for x, y in curves])
        iqm = np.array([stats.iqm(col) for col in aligned.T])
        line, = ax.plot(steps, iqm, label=arm)
        band = np.array([stats.bootstrap_ci(col) for col in aligned.T])
        ax.fill_between(steps, band[:, 0], band[:, 1], alpha=0.2, color=line.get_color())
        half = aligned[:, : max(1, aligned.shape[1] // 2)].mean(1)  # area under the first half of the curve
        final = aligned[:, -1]
        summaries = [json.loads((run_dir(arm, s) / "summary.json").read_text()) for s in done]
        success = np.mean([c[1][-1] for c in (curve(run_dir(arm, s), "eval/success_rate") for s in done)])
        lo, hi = stats.bootstrap_ci(half)
        flo, fhi = stats.bootstrap_ci(final)
        lines.append(f"| {arm} | {len(done)} | {stats.iqm(half):.3f} [{lo:.3f}, {hi:.3f}] "
                     f"| {stats.iqm(final):.3f} [{flo:.3f}, {fhi:.3f}] | {success:.2f} "
                     f"| {np.mean([s['env_steps_per_second'] for s in summaries]):.0f} |")
    ax.set(xlabel="frames", ylabel="evaluation return (IQM, 95% CI)")
    ax.set_title(title, fontsize=8)
    ax.legend()
    fig.tight_layout()
    fig.savefig(HERE / "pixels.png", dpi=120)
    table = "\n".join(lines)
    (HERE / "pixels.md").write_text(f"{title}\n\n{table}\n")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--frames", type=int, default=20_000)
    parser.add_argument("--arms", nargs="+", default=["plain", "curl"])
    parser.add_argument("--env-id", default="MiniGrid-Empty-5x5-v0")
    parser.add_argument("--tile", type=int, default=4)
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args()
    if not args.report:
        for seed in args.seeds:
            for arm in args.arms:
                if (run_dir(arm, seed) / "summary.json").exists():
                    continue
                code = subprocess.call(command(arm, seed, args), cwd=ROOT)
                if code:
                    sys.exit(f"{arm} seed {seed} failed with exit code {code}")
                print(f"{arm} seed {seed} done", flush=True)
    print(report(args.arms, args.seeds, f"{args.env_id}, pixels ({7 * args.tile}×{7 * args.tile}), "
                                        f"{args.frames:,} frames, seeds {args.seeds}"))


if __name__ == "__main__":
    main()
