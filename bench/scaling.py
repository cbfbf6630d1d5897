"""Pretraining throughput against batch size, with peak memory, as a table and a PNG plot.

    python bench/scaling.py                      # batch sizes 32…512, ResNet-18 32×32 SimCLR (~4 min)
    python bench/scaling.py --tiny               # seconds; what the test suite runs
    python bench/scaling.py --plot-only          # the PNGs again from bench/results/scaling_batch.json

Each batch size runs in a fresh process so peak RSS is per configuration.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

CHILD = """
import json, shutil, sys, tempfile, time, argparse
sys.path.insert(0, {here!r})
from common import peak_rss_mb
from pretrain_simclr import mmssl_runner
args = argparse.Namespace(tiny={tiny}, images={images}, batch={batch}, precision="fp32", channels_last=True)
run_dir = tempfile.mkdtemp(prefix="mmssl-bench-scaling-")
trainer, run, _, _ = mmssl_runner(args, run_dir)
run(1)
rates = [run({steps}) for _ in range({rounds})]
shutil.rmtree(run_dir, ignore_errors=True)
rates.sort()
print(json.dumps({{"batch": {batch}, "images_per_s": rates[len(rates) // 2], "peak_rss_mb": peak_rss_mb()}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 64, 128, 256, 512])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--plot-only", action="store_true", help="only redraw the PNGs from <out>/scaling_batch.json")
    args = parser.parse_args()
    if args.plot_only:
        plot(json.loads((Path(args.out) / "scaling_batch.json").read_text()), Path(args.out))
        return
    if args.tiny:
        args.batches, args.steps, args.rounds = [4], 1, 1
    rows = []
    for batch in args.batches:
        code = CHILD.format(here=str(HERE), tiny=args.tiny, images=64 if args.tiny else max(2048, 4 * batch), batch=batch,
                            steps=args.steps, rounds=args.rounds)
        out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(f"batch {batch:4d}: {rows[-1]['images_per_s']:7.1f} images/s, peak RSS {rows[-1]['peak_rss_mb']:.0f} MB",
              flush=True)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "scaling_batch.json").write_text(json.dumps(rows, indent=2) + "\n")
    plot(rows, out_dir)


def plot(rows: list[dict], out_dir: Path) -> None:
    """scaling_batch.png (throughput) and scaling_batch_memory.png (peak RSS) against batch size, axes from 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    b = [r["batch"] for r in rows]
    for name, key, ylabel, title, color in (
            ("scaling_batch.png", "images_per_s", "images / s (median of the timed rounds)",
             "SimCLR ResNet-18 32×32, 2-core CPU: throughput", "C0"),
            ("scaling_batch_memory.png", "peak_rss_mb", "peak RSS of the process (MB)",
             "SimCLR ResNet-18 32×32, 2-core CPU: memory", "C1")):
        fig, ax = plt.subplots(figsize=(5, 3.4))
        ax.plot(b, [r[key] for r in rows], marker="o", color=color)
        ax.set_xscale("log", base=2)
        ax.set_xticks(b, [str(v) for v in b])
        ax.minorticks_off()
        ax.set(xlabel="batch size", ylabel=ylabel, title=title, ylim=(0, None))
        ax.title.set_fontsize(9)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)

if __name__ == "__main__":
    main()
