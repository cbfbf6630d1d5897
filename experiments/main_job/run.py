"""The main job over seeds: `python experiments/main_job/run.py [--seeds 0 1 2]` → results.md here.

Runs `mmssl pretrain` with its defaults (SimCLR, small conv net, scikit-learn digits) once per seed and
tabulates linear-probe and kNN accuracy (mean ± std) of raw pixels, the random-init encoder and the
self-supervised encoder, with the wall-clock of each run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
ROWS = [("raw", "raw pixels"), ("random", "random-init encoder"), ("ssl", "self-supervised encoder (SimCLR)")]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="runs/main_job")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides")
    args = parser.parse_args()
    summaries = []
    for seed in args.seeds:
        run_dir = Path(args.out) / f"seed{seed}"
        subprocess.run([sys.executable, "-m", "mmssl.cli", "pretrain", f"seed={seed}", f"run_dir={run_dir}",
                        "trainer.progress=false", *args.overrides], check=True)
        summaries.append(json.loads((run_dir / "summary.json").read_text()))

    def cell(key: str) -> str:
        values = [s[key] for s in summaries]
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.4f} ± {sd:.4f}"

    lines = [f"Seeds {args.seeds}; mean ± std. Command: `python experiments/main_job/run.py "
             f"--seeds {' '.join(map(str, args.seeds))}`", "",
             "| representation | linear probe | kNN (k=20, cosine) |", "|---|---:|---:|"]
    for rep, label in ROWS:
        lines.append(f"| {label} | {cell(f'eval/image/{rep}/linear_probe_accuracy')} | "
                     f"{cell(f'eval/image/{rep}/knn_accuracy')} |")
    seconds = [s["time/total_seconds"] for s in summaries]
    lines += ["", f"Effective rank of SSL test features: {cell('eval/image/ssl/effective_rank')}; "
              f"wall-clock per run: {min(seconds):.0f}–{max(seconds):.0f} s (2-core CPU)."]
    (HERE / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
