"""Pretraining throughput against batch size, with peak memory, as a table and a PNG plot.

    python bench/scaling.py                      # batch sizes 32…512, ResNet-18 32×32 SimCLR (~4 min)
    python bench/scaling.py --tiny               # seconds; what the test suite runs

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
import json, sys, time, argparse
sys.path.insert(0, {here!r})
from common import peak_rss_mb
from pretrain_simclr import mmssl_runner
args = argparse.Namespace(tiny={tiny}, images={images}, batch={batch}, amp="off", channels_last=True)
trainer, run = mmssl_runner(args)
run(1)
rates = [run({steps}) for _ in range({rounds})]
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
    args = parser.parse_args()
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(9, 3.4))
    b = [r["batch"] for r in rows]
    ax[0].plot(b, [r["images_per_s"] for r in rows], marker="o")
    ax[0].set(xscale="log", xlabel="batch size", ylabel="images / s", title="SimCLR ResNet-18 32×32, 2-core CPU")
    ax[1].plot(b, [r["peak_rss_mb"] for r in rows], marker="o", color="C1")
    ax[1].set(xscale="log", xlabel="batch size", ylabel="peak RSS (MB)", title="memory")
    fig.tight_layout()
    fig.savefig(out_dir / "scaling_batch.png", dpi=110)


if __name__ == "__main__":
    main()
