"""Every image objective on digits under one step budget: probes, effective rank, mean ± std over seeds.

    python experiments/objectives/run.py                       # 3 seeds, 300 steps each (~25 min on 2 cores)
    python experiments/objectives/run.py --seeds 0 --steps 50  # a quick look
    python experiments/objectives/run.py --data fashion_mnist  # when /usr/share/datasets/fashion-mnist exists

Each run is `mmssl pretrain objective=<name>` with the same encoder (convnet width 16), batch 128,
AdamW with warmup + cosine, and the data's augmentation; runs are in-process (one import) and their
folders kept under runs/objectives/ (a finished run is reused, so an interrupted study continues). Writes results_<data>.md (table) and results_<data>.png (bar plot).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from mmssl.config import compose
from mmssl.train.pretrain import run

HERE = Path(__file__).parent
IMAGE_OBJECTIVES = ["simclr", "byol", "moco_v2", "moco_v3", "dcl", "triplet", "simsiam", "barlow_twins", "vicreg",
                    "masked_image", "rotation", "autoencoder", "vae", "cpc"]


def folder(args, name: str, seed: int) -> str:
    """The run folder of one (objective, seed); the step budget is part of it (300 steps: the original layout)."""
    budget = "" if args.steps == 300 else f"_{args.steps}steps"
    return f"runs/objectives/{args.data}{budget}/{name}/seed{seed}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--data", default="digits")
    parser.add_argument("--objectives", nargs="+", default=IMAGE_OBJECTIVES)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tag", default="", help="suffix of the result files (results_<data><tag>.md/png)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = [f"data={args.data}"] + (["data.limit=10000"] if args.data == "fashion_mnist" else [])
    results: dict[str, list[dict]] = {}
    for name in args.objectives:
        for seed in args.seeds:
            overrides = [*data, f"objective={name}", f"seed={seed}", f"trainer.steps={args.steps}",
                         "trainer.warmup_steps=20", "data.batch_size=128", "encoder.image.width=16",
                         "eval.plot=false", "eval.baselines=false", "logger.mode=disabled", "trainer.progress=false",
                         f"run_dir={folder(args, name, seed)}"]
            if name in ("autoencoder", "vae") and args.data != "digits":
                overrides.append(f"objective.{name}.image_size=28")
            done = Path(folder(args, name, seed)) / "summary.json"
            summary = json.loads(done.read_text()) if done.exists() else run(compose("pretrain", overrides))
            results.setdefault(name, []).append(summary)  # a finished run (its summary.json) is reused
    base_dir = Path(f"runs/objectives/{args.data}/baselines")  # raw pixels and a random encoder: one run, reused
    baseline = json.loads((base_dir / "summary.json").read_text()) if (base_dir / "summary.json").exists() else \
        run(compose("pretrain", [*data, "trainer.steps=1", "eval.plot=false", "logger.mode=disabled",
                                 "encoder.image.width=16", "trainer.progress=false", f"run_dir={base_dir}"]))

    def stat(name: str, key: str) -> tuple[float, float]:
        values = [s[key] for s in results[name]]
        return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0

    rows = sorted(results, key=lambda n: -stat(n, "eval/image/ssl/linear_probe_accuracy")[0])
    lines = [f"{args.data}, {args.steps} steps, batch 128, convnet width 16, seeds {args.seeds} (mean ± std).",
             f"Command: `python experiments/objectives/run.py --data {args.data} --steps {args.steps} "
             f"--seeds {' '.join(map(str, args.seeds))}"
             + (f" --objectives {' '.join(args.objectives)} --tag {args.tag}`" if args.tag else "`"), "",
             "| objective | linear probe | kNN | effective rank |", "|---|---:|---:|---:|",
             f"| *raw pixels* | {baseline['eval/image/raw/linear_probe_accuracy']:.4f} | "
             f"{baseline['eval/image/raw/knn_accuracy']:.4f} | – |",
             f"| *random-init encoder* | {baseline['eval/image/random/linear_probe_accuracy']:.4f} | "
             f"{baseline['eval/image/random/knn_accuracy']:.4f} | – |"]
    for name in rows:
        lp, kn, er = (stat(name, f"eval/image/ssl/{m}") for m in ("linear_probe_accuracy", "knn_accuracy", "effective_rank"))
        lines.append(f"| {name} | {lp[0]:.4f} ± {lp[1]:.4f} | {kn[0]:.4f} ± {kn[1]:.4f} | {er[0]:.1f} ± {er[1]:.1f} |")
    (HERE / f"results_{args.data}{args.tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.6))
    means = [stat(n, "eval/image/ssl/linear_probe_accuracy") for n in rows]
    ax.bar(rows, [m for m, _ in means], yerr=[s for _, s in means], capsize=3, color="C0", label="linear probe")
    ax.axhline(baseline["eval/image/raw/linear_probe_accuracy"], color="k", ls="--", lw=1, label="raw pixels")
    ax.axhline(baseline["eval/image/random/linear_probe_accuracy"], color="C3", ls=":", lw=1, label="random-init encoder")
    lo = min(m for m, _ in means) - 0.03
    ax.set(ylim=(max(0.0, lo), 1.0), ylabel="test accuracy", title=f"objectives on {args.data} ({args.steps} steps)")
    ax.tick_params(axis="x", rotation=45)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(HERE / f"results_{args.data}{args.tag}.png", dpi=110)


if __name__ == "__main__":
    main()
