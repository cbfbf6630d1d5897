"""The README's main job, timed: ``mmssl pretrain`` with its defaults, wall time and probe accuracy per seed.

Runs ``python -m mmssl.cli pretrain seed=S run_dir=<temporary folder> trainer.progress=false`` (the
``mmssl pretrain`` of the README's first line; SimCLR on scikit-learn digits, 600 steps) in a fresh
process per seed, and reports the process's wall time (start-up, data, training, evaluation — what a
user waits for), the run's own total (``time/total_seconds``: build, train, evaluate) and its training share
(``time/train_seconds``), and the linear-probe and kNN accuracies of the
self-supervised encoder next to raw pixels (from the run's ``summary.json``). The run folders are
temporary and removed afterwards.

    python bench/main_job.py                 # seeds 0 1 2 (~4 min on 2 cores)
    python bench/main_job.py --quick         # seed 0 only (~1.5 min)
    python bench/main_job.py --tiny          # 20 steps (seconds; not the main job's figure)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, machine, summary, table  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
KEYS = {"ssl_linear_probe": "eval/image/ssl/linear_probe_accuracy", "ssl_knn": "eval/image/ssl/knn_accuracy",
        "raw_linear_probe": "eval/image/raw/linear_probe_accuracy"}


def run(seed: int, overrides: list[str]) -> dict:
    folder = tempfile.mkdtemp(prefix="mmssl-bench-main-")
    try:
        env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "disabled")}
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "mmssl.cli", "pretrain", f"seed={seed}", f"run_dir={folder}/run",
                        "trainer.progress=false", *overrides], check=True, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        stats = json.loads((Path(folder) / "run" / "summary.json").read_text())
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {"wall_seconds": wall, "train_seconds": float(stats.get("time/train_seconds", float("nan"))),
            "run_seconds": float(stats.get("time/total_seconds", float("nan"))),  # build + train + evaluate
            **{name: float(stats[key]) for name, key in KEYS.items() if key in stats}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help="seed 0 only: one run of the real main job")
    parser.add_argument("--tiny", action="store_true", help="20 steps: checks the script, not the main job")
    parser.add_argument("--out", default=None, help="results JSON (default bench/results/main_job[_quick].json)")
    parser.add_argument("overrides", nargs="*", help="extra overrides (the figure is the main job's only without)")
    args = parser.parse_args()
    if args.quick or args.tiny:
        args.seeds = args.seeds[:1]
    overrides = [*args.overrides, *(["trainer.steps=20", "trainer.warmup_steps=2"] if args.tiny else [])]
    runs = []
    for seed in args.seeds:
        runs.append(run(seed, overrides))
        print(f"seed {seed}: {runs[-1]['wall_seconds']:.1f} s, linear probe {runs[-1].get('ssl_linear_probe')}",
              file=sys.stderr, flush=True)
    result = {"benchmark": "main_job", "command": "python bench/main_job.py " + " ".join(sys.argv[1:]),
              "job": "mmssl pretrain " + " ".join(overrides), "machine": machine(), "seeds": args.seeds,
              **{k: summary([r[k] for r in runs], 4 if "probe" in k or "knn" in k else 1)
                 for k in runs[0]}}
    print(table([[k, f"{v['mean']} ± {v['std']}"] for k, v in result.items() if isinstance(v, dict) and "mean" in v],
                ["main job", "mean ± std"]), file=sys.stderr)
    out = args.out or (None if args.tiny else str(RESULTS / f"main_job{'_quick' if args.quick else ''}.json"))
    emit(result, out)


if __name__ == "__main__":
    main()
