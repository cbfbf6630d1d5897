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
import torch

from mmssl.config import compose
from mmssl.rl.run import run

HERE = Path(__file__).parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rewards", nargs="+", default=["none", "rnd"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1])
    parser.add_argument("--frames", type=int, default=30000)
    parser.add_argument("--set", nargs="*", default=[], help="intrinsic.<key>=<value> overrides for the reward runs")
    parser.add_argument("--tag", default="", help="suffix of the reward's label in the table and run folder")
    parser.add_argument("--table", action="store_true", help="only print the table of --out")
    parser.add_argument("--out", default=str(HERE / "results.jsonl"))
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    if args.table:
        print(table(args.out))
        return
    torch.set_num_threads(1)
    for seed in args.seeds:
        for name in args.rewards:
            reward = [] if name == "none" else [f"intrinsic={name}", *args.set]
            label = f"{name}{args.tag}"
            cfg = compose("rl", [*args.overrides, *reward, f"seed={seed}", f"agent.total_timesteps={args.frames}",
                                 f"run_dir=runs/exploration/{label}-s{seed}", "logger.mode=disabled", "progress=false",
                                 "eval.video=false", "checkpoint_every=0"])
            start = time.perf_counter()
            summary = run(cfg)
            record = {"reward": label, "overrides": reward, "seed": seed, "frames": summary["global_step"],
                      "wall_s": round(time.perf_counter() - start, 1),
                      **{k: v for k, v in summary.items() if isinstance(v, int | float | None)}}
            with open(args.out, "a") as f:
                f.write(json.dumps(record) + "\n")
            print(json.dumps(record), flush=True)


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
    for r in rows:
        r |= curve_stats(Path("runs/exploration") / f"{r['reward']}-s{r['seed']}")
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
