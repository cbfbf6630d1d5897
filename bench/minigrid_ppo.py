"""MiniGrid: mmssl's PPO against stable-baselines3 on DoorKey-8x8 (symbolic) and a 56×56 RGB pixel task, plus env speed.

In one invocation, one torch thread:
- env steps/s of one DoorKey-8x8 env under uniformly random actions, mmssl's observation
  (envs/minigrid_obs.py) against MiniGrid's own (the observation is most of a MiniGrid step); blocks alternate;
- PPO on ``mmssl/MiniGridSymbolic-v0`` (DoorKey-8x8, (7, 7, 3) ids): mmssl (``agent=ppo_minigrid
  agent_encoder=minigrid``: 8 sync envs × 128 steps, 4 epochs × 4 minibatches, lr 1e-3, entropy 0.01),
  the same with MiniGrid's own observation code, mmssl with SB3's architecture (``agent_encoder=mlp``,
  separate 64-64 tanh actor and critic, linear heads), and SB3's PPO with the same hyper-parameters and its
  default policy for this space (``MlpPolicy``, 64-64 tanh) on the same env (``make_vec_env`` of the
  same wrapped env);
- PPO on ``mmssl/MiniGridPixels-v0`` (DoorKey-5x5 rendered to (3, 56, 56) uint8): mmssl (``agent=ppo_pixels
  agent_encoder=nature_cnn``: 8 envs × 128 steps, lr 2.5e-4, clip 0.1) against SB3's ``CnnPolicy``
  (the same Nature CNN) with the same hyper-parameters.

Each PPO run trains a whole budget per seed (SB3 in one ``learn`` call) and reports env-steps/s of the
training loop (construction excluded) and the mean return and success of its last 20 episodes; seeds
rotate the order of the libraries.

    python bench/minigrid_ppo.py                  # 2 seeds × 40,960 symbolic / 10,240 pixel steps (~8 min)
    python bench/minigrid_ppo.py --quick          # 1 seed × 4,096 / 2,048 steps (~1.5 min)
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
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import alternate, emit, has, machine, mean_std, median, summary, table  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
TASKS = {  # name → (mmssl overrides, SB3 policy, SB3 hyper-parameters matching the mmssl agent config)
    "doorkey8x8": (["env=minigrid_doorkey_8x8", "agent=ppo_minigrid", "agent_encoder=minigrid"], "MlpPolicy",
                   {"learning_rate": 1e-3, "clip_range": 0.2}),
    "pixels56": (["env=minigrid_pixels", "agent=ppo_pixels", "agent_encoder=nature_cnn"], "CnnPolicy",
                 {"learning_rate": 2.5e-4, "clip_range": 0.1}),
}


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


# SB3's MlpPolicy architecture in mmssl: separate 64-64 tanh actor and critic MLPs on the flattened grid
MLP = ["agent_encoder=mlp", "+agent_encoder.in_dim=147", "agent.separate_critic=true", "agent.head_hidden=0"]


def run_mmssl(task: str, total: int, seed: int, last: int, minigrid_obs: bool = False, extra: tuple = ()) -> dict:
    from mmssl.config import compose
    from mmssl.rl.ppo import PPO

    ppo = PPO(compose("rl", [*TASKS[task][0], *extra, f"agent.total_timesteps={total}", f"seed={seed}",
                             "logger.mode=disabled", "progress=false"]))
    if minigrid_obs:  # back to MiniGrid's own gen_obs (the instance attribute hides the class method)
        for env in ppo.envs.envs:
            del env.unwrapped.gen_obs
    start = time.perf_counter()
    while ppo.update_index < ppo.num_updates:
        ppo.update()
    seconds = time.perf_counter() - start
    returns, success = list(ppo.recent_returns)[-last:], list(ppo.recent_success)[-last:]
    ppo.close()
    return {"steps_per_s": ppo.global_step / seconds, "final_return": _mean(returns), "final_success": _mean(success)}


def run_sb3(task: str, total: int, seed: int, last: int) -> dict:
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from torch import nn

    import mmssl_envs
    from mmssl.config import compose

    overrides, policy, hyper = TASKS[task]
    env_cfg = compose("rl", overrides).env
    env = make_vec_env(lambda: mmssl_envs.make_env(env_cfg), n_envs=8, seed=seed)
    lr = hyper["learning_rate"]
    kwargs = {"net_arch": {"pi": [64, 64], "vf": [64, 64]}, "activation_fn": nn.Tanh} if policy == "MlpPolicy" else {}
    model = PPO(policy, env, n_steps=128, batch_size=256, n_epochs=4, learning_rate=lambda p: lr * p, gamma=0.99,
                gae_lambda=0.95, clip_range=hyper["clip_range"], ent_coef=0.01, vf_coef=0.5, max_grad_norm=0.5,
                seed=seed, policy_kwargs=kwargs, device="cpu", verbose=0, stats_window_size=max(100, last))
    start = time.perf_counter()
    model.learn(total_timesteps=total)
    seconds = time.perf_counter() - start
    episodes = list(model.ep_info_buffer)[-last:]
    env.close()
    return {"steps_per_s": model.num_timesteps / seconds, "final_return": _mean([e["r"] for e in episodes]),
            "final_success": _mean([float(e["r"] > 0) for e in episodes])}  # MiniGrid: reward > 0 iff goal reached


def _mean(values) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env-id", default="MiniGrid-DoorKey-8x8-v0", help="for the raw env-step comparison")
    parser.add_argument("--env-steps", type=int, default=20000, help="raw env steps per timed block")
    parser.add_argument("--rounds", type=int, default=3, help="env-step blocks per observation code")
    parser.add_argument("--steps", type=int, default=40960, help="PPO env steps per DoorKey-8x8 run")
    parser.add_argument("--pixel-steps", type=int, default=10240, help="PPO env steps per pixel run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--last", type=int, default=20, choices=range(1, 101), metavar="N")
    parser.add_argument("--quick", action="store_true", help="1 seed, 4,096 / 2,048 PPO steps (~1.5 min)")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--out", default=None, help="results JSON (default bench/results/minigrid_ppo[_quick].json)")
    args = parser.parse_args()
    if args.quick:
        args.env_steps, args.rounds, args.steps, args.pixel_steps, args.seeds = 5000, 2, 4096, 2048, args.seeds[:1]
    if args.tiny:
        args.env_steps, args.rounds, args.steps, args.pixel_steps, args.seeds = 200, 1, 1024, 1024, args.seeds[:1]
    torch.set_num_threads(1)
    threadpool_limits(1)  # numpy's BLAS too (the numpy PPO update of the MLP agent): one thread each
    env_runners = {"minigrid": env_runner(args.env_id, False), "mmssl": env_runner(args.env_id, True)}
    env_speed = alternate({n: functools.partial(r, args.env_steps) for n, r in env_runners.items()}, args.rounds)

    libs = {"doorkey8x8": ["mmssl", "mmssl_mlp", "mmssl_minigrid_obs"], "pixels56": ["mmssl"]}
    if has("stable_baselines3"):
        for names in libs.values():
            names.append("sb3")
    else:
        print("stable-baselines3 is not installed (pip install -e '.[bench]'): peer skipped", file=sys.stderr)
    runners = {"mmssl": run_mmssl, "sb3": run_sb3,
               "mmssl_minigrid_obs": lambda *a: run_mmssl(*a, minigrid_obs=True),
               "mmssl_mlp": lambda *a: run_mmssl(*a, extra=tuple(MLP))}
    runs: dict[str, dict[str, list[dict]]] = {t: {n: [] for n in names} for t, names in libs.items()}
    for i, seed in enumerate(args.seeds):
        for task, names in libs.items():
            total = args.steps if task == "doorkey8x8" else args.pixel_steps
            for name in names[i % len(names):] + names[:i % len(names)]:
                runs[task][name].append(runners[name](task, total, seed, args.last))
                r = runs[task][name][-1]
                print(f"seed {seed} {task} {name}: {r['steps_per_s']:.0f} steps/s, return {r['final_return']:.3f}",
                      file=sys.stderr, flush=True)

    result = {"benchmark": "minigrid_ppo", "command": "python bench/minigrid_ppo.py " + " ".join(sys.argv[1:]),
              "machine": machine(), "threads": 1, "seeds": args.seeds, "final_over_last": args.last,
              "env_id": args.env_id, "env_steps_per_s": {n: round(median(v)) for n, v in env_speed.items()},
              "env_speedup": round(median(env_speed["mmssl"]) / median(env_speed["minigrid"]), 2),
              "env_spread": {n: round(statistics.pstdev(v)) for n, v in env_speed.items()}}
    rows = [["env step (random actions)", n, f"{result['env_steps_per_s'][n]}", "-", "-"] for n in env_speed]
    for task, by_lib in runs.items():
        total = args.steps if task == "doorkey8x8" else args.pixel_steps
        speed = {n: [r["steps_per_s"] for r in rs] for n, rs in by_lib.items()}
        entry = {"steps_per_run": total, "steps_per_s": {n: summary(v, 0) for n, v in speed.items()},
                 "final_return": {n: summary([r["final_return"] for r in rs], 3) for n, rs in by_lib.items()},
                 "final_success": {n: summary([r["final_success"] for r in rs], 3) for n, rs in by_lib.items()},
                 "ratios": {f"mmssl_over_{n}": round(mean_std(speed["mmssl"])[0] / mean_std(v)[0], 2)
                            for n, v in speed.items() if n != "mmssl"}}
        if "mmssl_mlp" in speed and "sb3" in speed:  # the same architecture on both sides
            entry["ratios"]["mmssl_mlp_over_sb3"] = round(mean_std(speed["mmssl_mlp"])[0] / mean_std(speed["sb3"])[0], 2)
        result[task] = entry
        rows += [[f"PPO {task}", n, f"{entry['steps_per_s'][n]['mean']:.0f} ± {entry['steps_per_s'][n]['std']:.0f}",
                  f"{entry['final_return'][n]['mean']:.3f}", f"{entry['final_success'][n]['mean']:.2f}"] for n in speed]
    print(table(rows, ["measurement", "library", "steps/s", f"return (last {args.last})", "success"]), file=sys.stderr)
    print(f"ratios: env {result['env_speedup']}×, " + ", ".join(
        f"{t} {k} {v}×" for t in runs for k, v in result[t]["ratios"].items()), file=sys.stderr)
    out = args.out or (None if args.tiny else str(RESULTS / f"minigrid_ppo{'_quick' if args.quick else ''}.json"))
    emit(result, out)


if __name__ == "__main__":
    main()
