"""PPO throughput on CartPole-v1: mmssl against stable-baselines3, in one invocation, with returns beside speed.

CleanRL's defaults on both sides: 4 sync envs, 128 steps, 4 epochs, 4 minibatches, 64-64 tanh MLPs
(separate actor and critic), Adam 2.5e-4 annealed, γ 0.99, λ 0.95, clip 0.2, entropy 0.01, one torch
thread. Each library trains for ``--steps`` env steps per block; blocks alternate (mmssl, SB3, mmssl + RND,
…) and the median env-steps/s per library is reported, together with the mean episodic return of the last
100 episodes at the end (equal learning). Also mmssl PPO + RND against plain mmssl PPO.

    python bench/rl_ppo.py                   # 3 rounds × 50k steps per library (~2 min)
    python bench/rl_ppo.py --tiny            # seconds; what the test suite runs
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import alternate, emit, has, median, peak_rss_mb  # noqa: E402


def mmssl_runner(total: int, seed: int, intrinsic: bool):
    from mmssl.config import compose
    from mmssl.rl.ppo import PPO

    overrides = [f"agent.total_timesteps={total}", f"seed={seed}", "logger.mode=disabled", "progress=false"]
    if intrinsic:
        overrides.append("intrinsic=rnd")
    ppo = PPO(compose("rl", overrides))

    def run(steps: int) -> float:
        start, begin = time.perf_counter(), ppo.global_step
        while ppo.global_step - begin < steps and ppo.update_index < ppo.num_updates:
            ppo.update()
        return (ppo.global_step - begin) / (time.perf_counter() - start)

    def mean_return() -> float:
        return float(np.mean(ppo.recent_returns)) if ppo.recent_returns else float("nan")

    return run, mean_return


def sb3_runner(total: int, seed: int):
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from torch import nn

    env = make_vec_env("CartPole-v1", n_envs=4, seed=seed)
    lr = lambda progress: 2.5e-4 * progress  # noqa: E731  (linear annealing, as CleanRL)
    model = PPO("MlpPolicy", env, n_steps=128, batch_size=128, n_epochs=4, learning_rate=lr, gamma=0.99,
                gae_lambda=0.95, clip_range=0.2, ent_coef=0.01, vf_coef=0.5, max_grad_norm=0.5, seed=seed,
                policy_kwargs={"net_arch": {"pi": [64, 64], "vf": [64, 64]}, "activation_fn": nn.Tanh,
                               "ortho_init": True}, device="cpu", verbose=0)
    model._setup_learn(total, reset_num_timesteps=True)  # a fixed total so the LR schedule matches mmssl's
    done = {"steps": 0}

    def run(steps: int) -> float:
        start = time.perf_counter()
        model.learn(steps, reset_num_timesteps=False)
        done["steps"] += steps
        return steps / (time.perf_counter() - start)

    def mean_return() -> float:
        return float(np.mean([e["r"] for e in model.ep_info_buffer])) if model.ep_info_buffer else float("nan")

    return run, mean_return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=51200, help="env steps per timed block")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.tiny:
        args.steps, args.rounds = 1024, 1
    torch.set_num_threads(1)
    total = args.steps * args.rounds
    runners = {"mmssl": mmssl_runner(total, args.seed, intrinsic=False),
               "mmssl_rnd": mmssl_runner(total, args.seed, intrinsic=True)}
    if has("stable_baselines3"):
        runners["sb3"] = sb3_runner(total, args.seed)
    else:
        print("stable-baselines3 is not installed (pip install -e '.[bench]'): peer skipped", file=sys.stderr)
    speeds = alternate({name: functools.partial(run, args.steps) for name, (run, _) in runners.items()}, args.rounds)
    result = {f"{name}_steps_per_s": round(median(v)) for name, v in speeds.items()}
    result |= {f"{name}_mean_return_last100": round(ret(), 1) for name, (_, ret) in runners.items()}
    if "sb3" in runners:
        result["speedup_vs_sb3"] = round(median(speeds["mmssl"]) / median(speeds["sb3"]), 2)
    result["rnd_over_plain"] = round(median(speeds["mmssl_rnd"]) / median(speeds["mmssl"]), 2)
    result |= {"env_steps_per_library": total, "peak_rss_mb": round(peak_rss_mb()),
               "spread": {k: round(statistics.pstdev(v)) for k, v in speeds.items()}}
    emit(result, args.out)


if __name__ == "__main__":
    main()
