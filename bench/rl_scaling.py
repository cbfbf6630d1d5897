"""PPO env-steps/s against the number of environments, sync and async (one process per env), with memory.

    python bench/rl_scaling.py                         # CartPole, 1–16 envs, sync and async (~3 min)
    python bench/rl_scaling.py --env minigrid_doorkey_5x5 --encoder minigrid --agent ppo_minigrid
    python bench/rl_scaling.py --tiny                  # seconds; what the test suite runs

Each configuration runs in a fresh process (so peak RSS is its own) for ``--steps`` env steps with
``num_steps=128`` per env and one torch thread.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

CHILD = """
import json, sys, time, torch
sys.path.insert(0, {here!r})
from common import peak_rss_mb
from mmssl.config import compose
from mmssl.rl.ppo import PPO
torch.set_num_threads(1)
cfg = compose("rl", ["env={env}", "agent={agent}", "agent_encoder={encoder}", "agent.num_envs={n}",
                     "agent.num_steps={num_steps}", "agent.total_timesteps={total}", "env.asynchronous={asynchronous}",
                     "logger.mode=disabled", "progress=false"])
ppo = PPO(cfg)
ppo.update()  # warm-up (worker start, first allocation)
start, begin = time.perf_counter(), ppo.global_step
while ppo.update_index < ppo.num_updates:
    ppo.update()
rate = (ppo.global_step - begin) / (time.perf_counter() - start)
ppo.close()
print(json.dumps({{"num_envs": {n}, "asynchronous": {asynchronous}, "steps_per_s": rate, "peak_rss_mb": peak_rss_mb()}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--envs", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--steps", type=int, default=32768, help="timed env steps per configuration")
    parser.add_argument("--env", default="cartpole")
    parser.add_argument("--agent", default="ppo")
    parser.add_argument("--encoder", default="mlp")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--plot-only", action="store_true", help="only redraw the PNG from <out>/rl_scaling_<env>.json")
    args = parser.parse_args()
    if args.plot_only:
        plot(json.loads((Path(args.out) / f"rl_scaling_{args.env}.json").read_text()), args.env, Path(args.out))
        return
    num_steps = 128
    if args.tiny:
        args.envs, args.steps, num_steps = [1, 2], 64, 16
    rows = []
    for asynchronous in (False, True):
        for n in args.envs:
            batch = n * num_steps
            total = batch * (1 + max(1, args.steps // batch))
            code = CHILD.format(here=str(HERE), env=args.env, agent=args.agent, encoder=args.encoder, n=n,
                                num_steps=num_steps, total=total, asynchronous=asynchronous)
            out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            print(f"{'async' if asynchronous else 'sync '} {n:3d} envs: {rows[-1]['steps_per_s']:8.0f} env-steps/s, "
                  f"peak RSS {rows[-1]['peak_rss_mb']:.0f} MB", flush=True)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"rl_scaling_{args.env}.json").write_text(json.dumps(rows, indent=2) + "\n")
    plot(rows, args.env, out_dir)


def plot(rows: list[dict], env: str, out_dir: Path) -> None:
    """rl_scaling_<env>.png: env steps per second against the number of envs, sync and async; axis from 0, key
    outside the axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.6, 3.4))
    for asynchronous, label in ((False, "SyncVectorEnv"), (True, "AsyncVectorEnv\n(a process per env)")):
        sel = [r for r in rows if r["asynchronous"] == asynchronous]
        ax.plot([r["num_envs"] for r in sel], [r["steps_per_s"] for r in sel], marker="o", label=label)
    envs = sorted({r["num_envs"] for r in rows})
    ax.set_xscale("log", base=2)
    ax.set_xticks(envs, [str(n) for n in envs])
    ax.minorticks_off()
    ax.set(xlabel="number of envs", ylabel="env steps / s (one timed run)", title=f"PPO on {env}, 2-core CPU",
           ylim=(0, None))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    fig.tight_layout()
    fig.savefig(out_dir / f"rl_scaling_{env}.png", dpi=110)
    plt.close(fig)

if __name__ == "__main__":
    main()
