"""MiniGrid throughput: mmssl's observation (envs/minigrid_obs.py) against MiniGrid's own, in one invocation.

Two measurements on the same task, alternating blocks, medians reported:
- raw env steps/s of one env under uniformly random actions (the observation is most of a MiniGrid step);
- PPO env-steps/s (`agent=ppo_minigrid agent_encoder=minigrid`: 8 sync envs × 128 steps, 4 epochs, one torch
  thread), the whole loop — acting, stepping, updating.

    python bench/minigrid_ppo.py                  # DoorKey-8x8, 3 rounds (~2 min)
    python bench/minigrid_ppo.py --tiny           # seconds; what the test suite runs
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import alternate, emit, median  # noqa: E402


def env_runner(env_id: str, fast: bool):
    import minigrid  # noqa: F401

    from mmssl_envs import minigrid_obs

    env = gym.make(env_id).unwrapped
    if fast:
        minigrid_obs.install(env)
    rng = np.random.default_rng(0)
    env.reset(seed=0)

    def run(steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            _, _, terminated, truncated, _ = env.step(int(rng.integers(env.action_space.n)))
            if terminated or truncated:
                env.reset()
        return steps / (time.perf_counter() - start)

    return run


def ppo_runner(env_id: str, fast: bool, seed: int):
    from mmssl.config import compose
    from mmssl.rl.ppo import PPO

    ppo = PPO(compose("rl", ["env=minigrid_doorkey_5x5", f"env.kwargs.env_id={env_id}", "agent=ppo_minigrid",
                             "agent_encoder=minigrid", "agent.total_timesteps=100000000", f"seed={seed}",
                             "logger.mode=disabled", "progress=false"]))
    if not fast:  # back to MiniGrid's own gen_obs (the instance attribute hides the class method)
        for env in ppo.envs.envs:
            del env.unwrapped.gen_obs

    def run(steps: int) -> float:
        start, begin = time.perf_counter(), ppo.global_step
        while ppo.global_step - begin < steps:
            ppo.update()
        return (ppo.global_step - begin) / (time.perf_counter() - start)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env-id", default="MiniGrid-DoorKey-8x8-v0")
    parser.add_argument("--env-steps", type=int, default=20000, help="raw env steps per timed block")
    parser.add_argument("--ppo-steps", type=int, default=20480, help="PPO env steps per timed block")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.tiny:
        args.env_steps, args.ppo_steps, args.rounds = 200, 1024, 1
    torch.set_num_threads(1)
    runners = {"env_minigrid": env_runner(args.env_id, False), "env_mmssl": env_runner(args.env_id, True),
               "ppo_minigrid": ppo_runner(args.env_id, False, args.seed),
               "ppo_mmssl": ppo_runner(args.env_id, True, args.seed)}
    speeds = alternate({name: functools.partial(run, args.env_steps if name.startswith("env") else args.ppo_steps)
                        for name, run in runners.items()}, args.rounds)
    result = {"env_id": args.env_id, **{f"{name}_steps_per_s": round(median(v)) for name, v in speeds.items()},
              "env_speedup": round(median(speeds["env_mmssl"]) / median(speeds["env_minigrid"]), 2),
              "ppo_speedup": round(median(speeds["ppo_mmssl"]) / median(speeds["ppo_minigrid"]), 2),
              "spread": {k: round(statistics.pstdev(v)) for k, v in speeds.items()}}
    emit(result, args.out)


if __name__ == "__main__":
    main()
