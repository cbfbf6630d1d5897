"""Flagship study: DigitGrid agents that follow written or spoken instructions ("go to the seven").

    python experiments/flagship/run.py --seeds 0 1 2 3 4 --frames 50000 --jobs 2

1. Cross-modal pretraining, one per seed: ``mmssl pretrain encoder=trimodal data=trimodal_digits
   objective=bind`` (images, speech and text bound in one space; the tri-modal digits split of that seed
   holds out 30 % of the images and 20 % of the voices).
2. PPO agents per instruction modality (text, audio) and seed, at equal frames, all with the goal_map
   encoder (tiles and instruction embedded, compared into a goal map, a small CNN on top):
   - ``scratch``: both towers trained from the reward alone;
   - ``frozen``: the towers of the seed's pretraining run, frozen;
   - ``frozen+goal``: the same plus the cross-modal goal reward (cosine of the tile under the agent
     with the instruction, intrinsic=goal_similarity);
   - ``no_instruction``: frozen towers, the instruction removed from the env (must stay near chance; it
     does not depend on the instruction modality, so it runs once per seed and is shown in both panels).
   Every run trains on the seed's training images and voices and is evaluated every ``--eval-every``
   updates on ``split=test``: digit images and voices never seen in pretraining or RL.
3. Report: success rate on the test split against frames, IQM with 95 % stratified bootstrap CIs over
   seeds; results.md, results.json and flagship.png in this folder.

Runs are separate processes (one torch thread each, ``--jobs`` at a time) whose folders live under
runs/flagship/; a finished run (summary.json present) is skipped, so the study resumes after a kill.
``--report`` only rebuilds the report from the run folders.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
RUNS = ROOT / "runs" / "flagship"
AGENTS = ("scratch", "frozen", "frozen+goal", "no_instruction")
MODALITIES = ("text", "audio")
GOAL_COEF = 0.3
EARLY = 10_240  # frames (10 updates): the table's "how fast" column


def pretrain_command(seed: int, steps: int) -> list[str]:
    return ["mmssl", "pretrain", "encoder=trimodal", "data=trimodal_digits", "objective=bind",
            f"trainer.steps={steps}", "trainer.warmup_steps=10", "trainer.log_every=10", "trainer.progress=false",
            "threads=1", f"seed={seed}", "eval.baselines=false", "eval.plot=false", "logger.mode=disabled",
            f"run_dir={RUNS / 'bind' / f'seed{seed}'}"]


def rl_command(modality: str, agent: str, seed: int, frames: int, eval_every: int, eval_episodes: int) -> list[str]:
    bind = RUNS / "bind" / f"seed{seed}"
    encoder = "goal_map" if modality == "text" else "goal_map_audio"
    instruction = "none" if agent == "no_instruction" else modality
    cmd = ["mmssl", "rl", "env=digit_grid", f"env.kwargs.instruction={instruction}", f"env.kwargs.data_seed={seed}",
           "agent=ppo_minigrid", f"agent.total_timesteps={frames}", f"agent_encoder={encoder}",
           f"seed={seed}", "threads=1", "logger.mode=disabled", "progress=false", "checkpoint_every=10",
           f"eval.every={eval_every}", f"eval.episodes={eval_episodes}", "eval.probe_episodes=0",
           "eval.env_kwargs={split: test}", f"run_dir={run_dir(modality, agent, seed)}"]
    cmd += ["resume=true"] * has_checkpoint(run_dir(modality, agent, seed))
    if agent != "scratch":
        cmd += [f"agent_encoder.pretrained={bind}", "agent_encoder.freeze=true"]
    if agent == "frozen+goal":  # potential-based: pays cos(tile under the agent, instruction) gained by a move
        cmd += ["intrinsic=goal_similarity", f"intrinsic.checkpoint={bind}", f"intrinsic.goal_modality={modality}",
                "intrinsic.goal_key=instruction", "intrinsic.agent_tile=8", "intrinsic.mode=increase",
                f"intrinsic.coef={GOAL_COEF}"]
    return cmd


def has_checkpoint(folder: Path) -> bool:
    return bool(list((folder / "checkpoints").glob("step_*.pt")))


def clear_unstarted(folder: Path) -> None:
    """A run killed before its first checkpoint cannot be resumed and its folder refuses a new run: clear it."""
    if folder.is_dir() and not has_checkpoint(folder):
        shutil.rmtree(folder)


def run_dir(modality: str, agent: str, seed: int) -> Path:
    if agent == "no_instruction":
        modality = "none"
    return RUNS / modality / agent.replace("+", "_") / f"seed{seed}"


def launch(cmd: list[str], log: Path) -> float:
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "a") as f:
        code = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    if code:
        sys.exit(f"{' '.join(cmd)} failed with exit code {code}; see {log}")
    return time.perf_counter() - start


def curve(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    from mmssl.logging import metric_curve

    steps, values = metric_curve(folder, "eval/success_rate")
    return np.array(steps), np.array(values)


def plot(results: dict, path: Path) -> None:
    """One idea: which agents solve the task on unseen test items. Test success at the end of training per
    agent and instruction modality (IQM over seeds, bars: 95% bootstrap CI over seeds; small dots: the seeds),
    ``no_instruction`` (modality ``none``) as the floor, chance dotted; success on [0, 1]; key below.
    Drawn from results.json's summary fields alone (its per-evaluation curves are optional)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    groups = [(m, f"C{i}") for i, m in enumerate((*MODALITIES, "none"))]
    width = 0.22
    for k, (modality, color) in enumerate(groups):
        offset = (k - (len(groups) - 1) / 2) * width
        for j, agent in enumerate(AGENTS):
            row = results.get(f"{modality}/{agent}")
            if row is None:
                continue
            x = j + (0.0 if modality == "none" else offset)
            seeds = list(row["per_seed"].values())
            ax.scatter([x + 0.05] * len(seeds), seeds, s=8, color=color, alpha=0.35, linewidths=0)
            ax.errorbar(x, row["iqm"], yerr=[[row["iqm"] - row["ci_low"]], [row["ci_high"] - row["iqm"]]], fmt="o",
                        color=color, capsize=4, label=f"{modality} instruction" if modality != "none" else "no instruction")
    ax.axhline(1 / 3, color="grey", ls=":", lw=1, label="chance (1 of 3 tiles)")
    n = max(row["n"] for row in results.values())
    frames = max(row["frames"] for row in results.values())
    ax.set_xticks(range(len(AGENTS)), AGENTS)
    ax.set(ylabel=f"test success rate at {frames:,} frames\n(IQM over seeds)", ylim=(0, 1.02),
           xlim=(-0.5, len(AGENTS) - 0.5), title="unseen images (and unseen voices for audio)")
    ax.grid(axis="y", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    by_label = dict(zip(labels, handles))
    by_label[f"bars: 95% bootstrap CI over {n} seeds; dots: seeds"] = plt.Line2D([], [], color="black", marker="|",
                                                                               ls="", markersize=10)
    ax.legend(by_label.values(), by_label.keys(), loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2,
              frameon=False, fontsize=8)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def report(seeds: list[int]) -> str:
    from mmssl.eval import stats

    results, rows = {}, []
    for modality in MODALITIES:
        for agent in AGENTS:
            done = [s for s in seeds if (run_dir(modality, agent, s) / "summary.json").exists()]
            if not done:
                continue
            curves = [curve(run_dir(modality, agent, s)) for s in done]
            summaries = [json.loads((run_dir(modality, agent, s) / "summary.json").read_text()) for s in done]
            final = np.array([c[1][-1] for c in curves])
            early = np.array([np.interp(EARLY, x, y) for x, y in curves])  # how fast: success after 10k frames
            steps = curves[0][0]
            aligned = np.stack([np.interp(steps, x, y) for x, y in curves])  # (seeds, points)
            iqm = np.array([stats.iqm(aligned[:, i]) for i in range(aligned.shape[1])])
            band = np.array([stats.bootstrap_ci(aligned[:, i]) for i in range(aligned.shape[1])])
            row = {"modality": modality, "agent": agent, **stats.summarize(final),
                   "early_iqm": float(stats.iqm(early)), "early_ci": [float(v) for v in stats.bootstrap_ci(early)],
                   "frames": int(steps[-1]), "wall_s_per_run": float(np.mean([s["train_wall_clock_s"] for s in summaries])),
                   "env_steps_per_second": float(np.mean([s["env_steps_per_second"] for s in summaries])),
                   "per_seed": {int(s): float(v) for s, v in zip(done, final)},
                   "curve": {"frames": [int(v) for v in steps], "iqm": [round(float(v), 4) for v in iqm],
                             "ci_low": [round(float(v), 4) for v in band[:, 0]],
                             "ci_high": [round(float(v), 4) for v in band[:, 1]]}}
            if agent == "no_instruction":
                row["modality"] = "none"
            if f"{row['modality']}/{agent}" not in results:
                results[f"{row['modality']}/{agent}"] = row
                rows.append(row)
    plot(results, HERE / "flagship.png")
    (HERE / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    lines = [f"| instruction | agent | runs | test success after {EARLY:,} frames, IQM [95% CI] "
             "| test success at the end, IQM [95% CI] | mean ± std | frames | wall-clock / run | env-steps/s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['modality']} | {r['agent']} | {r['n']} "
                     f"| {r['early_iqm']:.2f} [{r['early_ci'][0]:.2f}, {r['early_ci'][1]:.2f}] "
                     f"| {r['iqm']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}] "
                     f"| {r['mean']:.2f} ± {r['std']:.2f} | {r['frames']:,} | {r['wall_s_per_run']:.0f} s "
                     f"| {r['env_steps_per_second']:.0f} |")
    table = "\n".join(lines)
    (HERE / "results.md").write_text(table + "\n")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--frames", type=int, default=50_000)
    parser.add_argument("--agents", nargs="+", default=list(AGENTS), choices=AGENTS)
    parser.add_argument("--modalities", nargs="+", default=list(MODALITIES), choices=MODALITIES)
    parser.add_argument("--pretrain-steps", type=int, default=60)
    parser.add_argument("--eval-every", type=int, default=5, help="updates (of 1024 frames) between test evaluations")
    parser.add_argument("--eval-episodes", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (one torch thread each)")
    parser.add_argument("--report", action="store_true", help="only rebuild the report from runs/flagship")
    parser.add_argument("--plot-only", action="store_true",
                        help="only redraw flagship.png from the committed results.json")
    args = parser.parse_args()
    if args.plot_only:
        plot(json.loads((HERE / "results.json").read_text()), HERE / "flagship.png")
        return
    if not args.report:
        pending = [s for s in args.seeds if not list((RUNS / "bind" / f"seed{s}" / "checkpoints").glob("step_*.pt"))]
        for s in pending:
            clear_unstarted(RUNS / "bind" / f"seed{s}")
        with ThreadPoolExecutor(args.jobs) as pool:
            list(pool.map(lambda s: launch(pretrain_command(s, args.pretrain_steps), RUNS / "logs" / f"bind_seed{s}.log"),
                          pending))
        jobs = list(dict.fromkeys((m if a != "no_instruction" else "text", a, s) for s in args.seeds
                                  for m in args.modalities for a in args.agents))
        jobs = [job for job in jobs if not (run_dir(*job) / "summary.json").exists()]

        def one(job):
            m, a, s = job
            clear_unstarted(run_dir(m, a, s))
            wall = launch(rl_command(m, a, s, args.frames, args.eval_every, args.eval_episodes),
                          RUNS / "logs" / f"{run_dir(m, a, s).parent.parent.name}_{a.replace('+', '_')}_seed{s}.log")
            print(f"{m:5s} {a:15s} seed {s}: {wall:.0f} s", flush=True)

        with ThreadPoolExecutor(args.jobs) as pool:
            list(pool.map(one, jobs))
    print(report(args.seeds))


if __name__ == "__main__":
    main()
