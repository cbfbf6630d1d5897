"""PPO on CartPole-v1: mmssl against stable-baselines3 and CleanRL's ``ppo.py``, in one invocation, over seeds.

CleanRL's defaults on every side: 4 sync envs × 128 steps, 4 epochs of 4 minibatches, 64-64 tanh MLPs
(separate actor and critic), Adam 2.5e-4 annealed linearly to 0 over the run, γ 0.99, λ 0.95, clip 0.2
(policy and value), entropy 0.01, value 0.5, grad-norm 0.5; one torch thread and one BLAS thread each.
Each library trains a whole run of ``--steps`` env steps per seed, the way its users run it:

- mmssl: ``PPO(compose("rl", ...))`` and ``update()`` until the budget is spent (what ``mmssl rl`` runs;
  its default ``agent.update_engine=auto`` updates this MLP agent in numpy);
- stable-baselines3: ``make_vec_env`` (DummyVecEnv + Monitor) and one ``model.learn(total_timesteps)``
  call, so its learning-rate schedule spans the run;
- CleanRL: its ``cleanrl/ppo.py`` from the PyPI package (gym 0.23 API), in a subprocess with one torch
  thread, its SPS and episodic returns read from its stdout (it prints the first episode that ends at each
  step, so a few simultaneous endings go unlisted).

Speed: env steps / wall time of the training loop (construction excluded everywhere; CleanRL's own SPS).
Return: the mean episodic return of the last ``--last`` finished episodes of each run. Seeds run one
after another and the order of the libraries rotates per seed, so machine drift hits each alike;
reported as mean ± std over seeds, with the ratios of the means.

    python bench/rl_ppo.py                  # 3 seeds × 102,400 steps × 4 runners (~3 min on 2 cores)
    python bench/rl_ppo.py --quick          # 3 seeds × 20,480 steps, no RND (~1 min)
    python bench/rl_ppo.py --tiny           # seconds; what the test suite runs
    python bench/rl_ppo.py --libs mmssl sb3 --mmssl-overrides agent.clip_vloss=false   # a variant's returns
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, has, machine, mean_std, peak_rss_mb, summary, table  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def run_mmssl(total: int, seed: int, last: int, intrinsic: bool = False, extra: tuple[str, ...] = ()) -> dict:
    from mmssl.config import compose
    from mmssl.rl.ppo import PPO

    overrides = [f"agent.total_timesteps={total}", f"seed={seed}", "logger.mode=disabled", "progress=false", *extra]
    if intrinsic:
        overrides.append("intrinsic=rnd")
    ppo = PPO(compose("rl", overrides))
    start = time.perf_counter()
    while ppo.update_index < ppo.num_updates:
        ppo.update()
    seconds = time.perf_counter() - start
    steps, returns = ppo.global_step, list(ppo.recent_returns)  # the last 100 episodes, enough for --last ≤ 100
    ppo.close()
    return {"steps": steps, "steps_per_s": steps / seconds, "final_return": _last_mean(returns, last)}


def run_sb3(total: int, seed: int, last: int) -> dict:
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from torch import nn

    env = make_vec_env("CartPole-v1", n_envs=4, seed=seed)
    lr = lambda progress: 2.5e-4 * progress  # noqa: E731  (linear annealing to 0, as CleanRL)
    model = PPO("MlpPolicy", env, n_steps=128, batch_size=128, n_epochs=4, learning_rate=lr, gamma=0.99,
                gae_lambda=0.95, clip_range=0.2, clip_range_vf=0.2, ent_coef=0.01, vf_coef=0.5, max_grad_norm=0.5,
                seed=seed, stats_window_size=max(100, last),
                policy_kwargs={"net_arch": {"pi": [64, 64], "vf": [64, 64]}, "activation_fn": nn.Tanh,
                               "ortho_init": True}, device="cpu", verbose=0)
    start = time.perf_counter()
    model.learn(total_timesteps=total)  # one call for the whole budget, as its users run it
    seconds = time.perf_counter() - start
    returns = [e["r"] for e in model.ep_info_buffer]
    env.close()
    return {"steps": int(model.num_timesteps), "steps_per_s": model.num_timesteps / seconds,
            "final_return": _last_mean(returns, last)}


# CleanRL's script does not pin torch's threads; the wrapper does, then runs it as `python -m cleanrl.ppo`
CLEANRL = ("import runpy, sys, torch; torch.set_num_threads(1); sys.argv = ['ppo.py', *sys.argv[1:]]; "
           "runpy.run_module('cleanrl.ppo', run_name='__main__', alter_sys=True)")


def run_cleanrl(total: int, seed: int, last: int) -> dict:
    folder = tempfile.mkdtemp(prefix="bench-cleanrl-")  # it writes runs/<name>/ tensorboard files to its cwd
    try:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
               "CUDA_VISIBLE_DEVICES": ""}
        proc = subprocess.run([sys.executable, "-c", CLEANRL, "--total-timesteps", str(total), "--seed", str(seed),
                               "--track", "false", "--cuda", "false", "--capture-video", "false"],
                              cwd=folder, env=env, capture_output=True, text=True, timeout=3600)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if proc.returncode:
        raise RuntimeError(f"cleanrl.ppo failed (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    sps = [int(x) for x in re.findall(r"^SPS: (\d+)", proc.stdout, re.M)]
    returns = [float(x) for x in re.findall(r"episodic_return=\[?([-\d.]+)", proc.stdout)]
    steps = (total // 512) * 512
    return {"steps": steps, "steps_per_s": float(sps[-1]), "final_return": _last_mean(returns, last)}


def _last_mean(returns: list[float], last: int) -> float:
    return float(np.mean(returns[-last:])) if returns else float("nan")


def available(names: list[str]) -> list[str]:
    needs = {"sb3": "stable_baselines3", "cleanrl": "cleanrl"}
    kept = []
    for name in names:
        if name in needs and not has(needs[name]):
            print(f"{needs[name]} is not installed (pip install -e '.[bench]'): {name} skipped", file=sys.stderr)
        else:
            kept.append(name)
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=102400, help="env steps per run (a multiple of 512)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--libs", nargs="+", default=["mmssl", "sb3", "cleanrl", "mmssl_rnd"],
                        choices=["mmssl", "sb3", "cleanrl", "mmssl_rnd"])
    parser.add_argument("--last", type=int, default=20, choices=range(1, 101), metavar="N",
                        help="final return = mean of the last N ≤ 100 episodes")
    parser.add_argument("--mmssl-overrides", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides for mmssl's runs, e.g. agent.clip_vloss=false (a variant's returns)")
    parser.add_argument("--quick", action="store_true", help="3 seeds × 20,480 steps, no RND (~1.5 min)")
    parser.add_argument("--tiny", action="store_true", help="one seed, 1,024 steps (seconds)")
    parser.add_argument("--out", default=None, help="results JSON (default bench/results/rl_ppo[_quick].json)")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.libs = 20480, [n for n in args.libs if n != "mmssl_rnd"]
    if args.tiny:
        args.steps, args.seeds = 1024, args.seeds[:1]
    torch.set_num_threads(1)
    threadpool_limits(1)  # numpy's BLAS too (mmssl's numpy update, SB3's and CleanRL's numpy): one thread each
    libs = available(args.libs)
    extra = tuple(args.mmssl_overrides)
    runners = {"mmssl": lambda total, seed, last: run_mmssl(total, seed, last, extra=extra),
               "sb3": run_sb3, "cleanrl": run_cleanrl,
               "mmssl_rnd": lambda total, seed, last: run_mmssl(total, seed, last, intrinsic=True, extra=extra)}
    runs: dict[str, list[dict]] = {name: [] for name in libs}
    for i, seed in enumerate(args.seeds):
        for name in libs[i % len(libs):] + libs[:i % len(libs)]:  # rotate the order per seed
            runs[name].append(runners[name](args.steps, seed, args.last))
            print(f"seed {seed} {name}: {runs[name][-1]['steps_per_s']:.0f} steps/s, "
                  f"return {runs[name][-1]['final_return']:.1f}", file=sys.stderr, flush=True)

    speed = {n: [r["steps_per_s"] for r in rs] for n, rs in runs.items()}
    result = {"benchmark": "rl_ppo", "env": "CartPole-v1", "steps_per_run": args.steps, "seeds": args.seeds,
              "final_return_over_last": args.last, "threads": 1, "machine": machine(),
              "command": "python bench/rl_ppo.py " + " ".join(sys.argv[1:]), "mmssl_overrides": list(extra),
              "steps_per_s": {n: summary(v, 0) for n, v in speed.items()},
              "final_return": {n: summary([r["final_return"] for r in rs]) for n, rs in runs.items()},
              "ratios": {}}
    for peer, key in (("sb3", "mmssl_over_sb3"), ("cleanrl", "mmssl_over_cleanrl"), ("mmssl_rnd", "rnd_over_plain")):
        if "mmssl" in speed and peer in speed:
            ratio = mean_std(speed[peer])[0] / mean_std(speed["mmssl"])[0] if peer == "mmssl_rnd" else \
                mean_std(speed["mmssl"])[0] / mean_std(speed[peer])[0]
            result["ratios"][key] = round(ratio, 2)
    result["targets"] = {"mmssl_over_sb3": 2.0, "mmssl_over_cleanrl": 2.5}
    result["peak_rss_mb"] = round(peak_rss_mb())
    rows = [[n, f"{result['steps_per_s'][n]['mean']:.0f} ± {result['steps_per_s'][n]['std']:.0f}",
             f"{result['final_return'][n]['mean']:.1f} ± {result['final_return'][n]['std']:.1f}"] for n in runs]
    print(table(rows, ["library", "env-steps/s", f"return (last {args.last})"]), file=sys.stderr)
    print("ratios: " + ", ".join(f"{k} {v}×" for k, v in result["ratios"].items()), file=sys.stderr)
    out = args.out or (None if args.tiny else str(RESULTS / f"rl_ppo{'_quick' if args.quick else ''}.json"))
    emit(result, out)


if __name__ == "__main__":
    main()
