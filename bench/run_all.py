"""Every CPU benchmark against its peers, one fresh process each, and one summary of the ratios.

    python bench/run_all.py --quick      # ≤ ~6 min on 2 cores → bench/results/quick.json
    python bench/run_all.py              # the full benchmarks (~30 min) → bench/results/all.json

Runs ``rl_ppo.py``, ``pretrain_simclr.py``, ``minigrid_ppo.py`` and ``main_job.py`` (each with ``--quick``
when given), prints the machine's CPU model and the flags that decide the fast kernels (avx512_bf16,
AMX) from /proc/cpuinfo and its load average before and after (a loaded machine makes every figure
noisy: run it on a quiet one), then a table of mmssl's figures, its peers' and the ratios, and writes
every script's results into one JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import machine, strict_json, table  # noqa: E402

SCRIPTS = ("rl_ppo", "pretrain_simclr", "minigrid_ppo", "main_job")


def rows_for(name: str, r: dict) -> list[list[str]]:
    """(benchmark, mmssl, peer, ratio) rows of one script's results."""
    if name == "rl_ppo":
        s, ret = r["steps_per_s"], r["final_return"]
        fmt = lambda lib: f"{s[lib]['mean']:.0f} ± {s[lib]['std']:.0f} steps/s (return {ret[lib]['mean']:.0f})"  # noqa: E731
        return [[f"PPO CartPole vs {peer}", fmt("mmssl"), f"{peer} {fmt(peer)}", f"{r['ratios'][key]}×"]
                for peer, key in (("sb3", "mmssl_over_sb3"), ("cleanrl", "mmssl_over_cleanrl")) if key in r["ratios"]]
    if name == "pretrain_simclr":
        probe = r["probe_accuracy"]
        return [["SimCLR ResNet-18 32×32 img/s (probe acc.)", f"{r['mmssl_images_per_s']} ({probe.get('mmssl', '-')})",
                 f"lightly {r['lightly_images_per_s']} ({probe.get('lightly', '-')})", f"{r['speedup']}×"],
                [f"SimCLR MFU, {r['dtype']}: executed, model FLOPs / bare model",
                 f"{r['achieved_gflops']} GFLOP/s executed ({r['gflops_per_step']} of {r['model_gflops_per_step']} per step)",
                 f"matmul peak {r['matmul_peak_gflops']} / bare model {r['bare_model']['gflops_per_s']}",
                 f"{r['mfu_vs_matmul_peak']:.0%}, {r['model_flops_vs_matmul_peak']:.0%} / {r['share_of_bare_model']:.0%}"],
                ["SimCLR bare model img/s (dead taps skipped)", f"{r['bare_model']['images_per_s']}",
                 f"every tap {r['bare_model_every_tap']['images_per_s']}",
                 f"{r['bare_model_every_tap']['bare_model_speedup']}×"]]
    if name == "minigrid_ppo":
        out = [["MiniGrid env step", f"{r['env_steps_per_s']['mmssl']} steps/s",
                f"MiniGrid's {r['env_steps_per_s']['minigrid']}", f"{r['env_speedup']}×"]]
        for task, lib in (("doorkey8x8", "mmssl"), ("doorkey8x8", "mmssl_mlp"), ("pixels56", "mmssl")):
            s = r[task]["steps_per_s"]
            if "sb3" in s and lib in s:
                out.append([f"PPO {task} ({lib})", f"{s[lib]['mean']:.0f} steps/s", f"sb3 {s['sb3']['mean']:.0f}",
                            f"{s[lib]['mean'] / s['sb3']['mean']:.2f}×"])
        return out
    if name == "main_job":
        return [["main job (mmssl pretrain) wall s", f"{r['wall_seconds']['mean']} s "
                 f"(probe {r['ssl_linear_probe']['mean']})", f"raw pixels probe {r['raw_linear_probe']['mean']}", "-"]]
    return []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="each script's --quick (≤ ~6 min in all)")
    parser.add_argument("--only", nargs="+", choices=SCRIPTS, default=list(SCRIPTS))
    parser.add_argument("--out", default=None, help="default bench/results/quick.json or all.json")
    args = parser.parse_args()
    before = machine()
    print(f"CPU: {before['cpu']}, {before['cores']} cores, flags {' '.join(before['flags']) or '-'}; "
          f"load {before['load_avg_1m']}", file=sys.stderr)
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": os.pathsep.join(
        [str(HERE.parent), *filter(None, [os.environ.get("PYTHONPATH")])])}
    results, seconds = {}, {}
    with tempfile.TemporaryDirectory(prefix="mmssl-bench-all-") as folder:
        for name in args.only:
            out = Path(folder) / f"{name}.json"
            command = [sys.executable, str(HERE / f"{name}.py"), *(["--quick"] if args.quick else []), "--out", str(out)]
            print(f"running {' '.join(command[1:-2])}", file=sys.stderr, flush=True)
            start = time.perf_counter()
            proc = subprocess.run(command, env=env, cwd=HERE.parent, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  text=True)
            seconds[name] = round(time.perf_counter() - start, 1)
            if proc.returncode:
                print(proc.stderr[-3000:], file=sys.stderr)
                results[name] = {"error": f"exit {proc.returncode}"}
                continue
            results[name] = json.loads(out.read_text())
            print(f"  {seconds[name]} s", file=sys.stderr, flush=True)
    after = machine()
    rows = [row for name, r in results.items() if "error" not in r for row in rows_for(name, r)]
    print(table(rows, ["benchmark", "mmssl", "peer", "ratio"]))
    print(f"CPU {after['cpu']} ({after['cores']} cores; {' '.join(after['flags'])}); load "
          f"{before['load_avg_1m']} → {after['load_avg_1m']}; seconds {seconds}")
    summary = {"command": "python bench/run_all.py " + " ".join(sys.argv[1:]), "machine": before,
               "load_avg_1m_after": after["load_avg_1m"], "seconds": seconds, "table": rows, "results": results}
    path = Path(args.out) if args.out else HERE / "results" / ("quick.json" if args.quick else "all.json")
    path.write_text(json.dumps(strict_json(summary), indent=2, allow_nan=False) + "\n")
    print(f"wrote {path}")
    if any("error" in r for r in results.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
