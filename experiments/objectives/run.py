"""Every image objective on digits or Fashion-MNIST under one step budget: probes, rank, k-means NMI, wall-clock.

    python experiments/objectives/run.py                       # 3 seeds, 300 steps each (~25 min on 2 cores)
    python experiments/objectives/run.py --seeds 0 --steps 50  # a quick look
    python experiments/objectives/run.py --data fashion_mnist  # when /usr/share/datasets/fashion-mnist exists
    python experiments/objectives/run.py --encoder vit --objectives mae ijepa data2vec simclr --tag _vit

Each run is `mmssl pretrain objective=<name>` with the same encoder (convnet width 16, or with ``--encoder
vit`` the `vit_tiny` ViT: width 64, depth 4, 2×2 patches on digits, 4×4 on 28×28), batch 128, AdamW with
warmup + cosine, and the data's augmentation; runs are in-process (one import) and their folders kept under
runs/objectives/ (a finished run is reused, so an interrupted study continues). Per run: the linear probe,
kNN and effective rank of the pretraining summary, k-means NMI of the test features (`mmssl eval`'s
k-means: k = number of classes, 10 restarts, seeded, on L2-normalised features; cached in the run folder's
eval/) and the pretraining wall-clock (the summary's ``time/train_seconds``: build + training, before the
evaluation). Writes results_<data><tag>.md (table), .json (per-seed values and mean/std), .csv and .png.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from pathlib import Path

import torch

from mmssl.config import compose
from mmssl.eval.transfer import run as eval_run
from mmssl.train.pretrain import run

HERE = Path(__file__).parent
IMAGE_OBJECTIVES = ["simclr", "byol", "moco_v2", "moco_v3", "dcl", "triplet", "simsiam", "barlow_twins", "vicreg",
                    "masked_image", "rotation", "autoencoder", "vae", "cpc"]
#: (summary key, column header, format) of the table, in order; "nmi" and "seconds" are added per run
METRICS = [("eval/image/ssl/linear_probe_accuracy", "linear probe", ".4f"), ("eval/image/ssl/knn_accuracy", "kNN", ".4f"),
           ("eval/image/ssl/effective_rank", "effective rank", ".1f"), ("nmi", "k-means NMI", ".4f"),
           ("seconds", "pretrain s", ".0f")]
RESIZED = ("autoencoder", "vae", "context_encoder", "bigan")  # objectives with their own decoder/generator resolution
#: per-data objective settings without which a default cannot run (recipe=ijepa_digits: 4×4 patches leave no
#: context around four blocks of the official 15–20 % scale)
DATA_OVERRIDES = {("ijepa", "digits"): ["objective.ijepa.target_scale=[0.1,0.2]"]}


def folder(args, name: str, seed: int) -> str:
    """The run folder of one (objective, seed); the step budget (300: the original layout) and a ViT are part of it."""
    budget = "" if args.steps == 300 else f"_{args.steps}steps"
    return f"runs/objectives/{args.data}{budget}{'_vit' if args.encoder == 'vit' else ''}/{name}/seed{seed}"


def encoder_overrides(args) -> list[str]:
    if args.encoder == "vit":
        return ["encoder=vit_tiny"] + ([] if args.data == "digits" else ["encoder.image.patch_size=4"])
    return ["encoder.image.width=16"]


def kmeans_nmi(run_dir: Path, rep: str = "ssl") -> float:
    """k-means NMI of a run's test features (``rep``: ssl, raw or random), computed once by `mmssl eval` and cached."""
    cached = run_dir / "eval" / "study_kmeans" / "results.json"
    if cached.exists():
        results = json.loads(cached.read_text())["results"]
    else:
        results, _ = eval_run(run_dir, ["eval.name=study_kmeans", f"eval.baselines={str(rep != 'ssl').lower()}",
                                        "eval.plot=false"])
    return results[f"image/{rep}/kmeans_nmi"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--data", default="digits")
    parser.add_argument("--encoder", default="convnet", choices=["convnet", "vit"])
    parser.add_argument("--objectives", nargs="+", default=IMAGE_OBJECTIVES)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tag", default="", help="suffix of the result files (results_<data><tag>.md/json/csv/png)")
    parser.add_argument("--plot-only", action="store_true", help="only redraw the PNGs from the committed results_*.json")
    args = parser.parse_args()
    if args.plot_only:
        print("\n".join(str(p) for p in plot_only()))
        return
    torch.set_num_threads(args.threads)
    data = [f"data={args.data}"] + (["data.limit=10000"] if args.data == "fashion_mnist" else [])
    results: dict[str, list[dict]] = {}
    for name in args.objectives:
        for seed in args.seeds:
            run_dir = Path(folder(args, name, seed))
            overrides = [*data, f"objective={name}", f"seed={seed}", f"trainer.steps={args.steps}",
                         "trainer.warmup_steps=20", "data.batch_size=128", *encoder_overrides(args),
                         "eval.plot=false", "eval.baselines=false", "logger.mode=disabled", "trainer.progress=false",
                         f"run_dir={run_dir}"]
            if name in RESIZED and args.data != "digits":
                overrides.append(f"objective.{name}.image_size=28")
            overrides += DATA_OVERRIDES.get((name, args.data), [])
            done = run_dir / "summary.json"
            summary = json.loads(done.read_text()) if done.exists() else run(compose("pretrain", overrides))
            summary = summary | {"nmi": kmeans_nmi(run_dir), "seconds": summary["time/train_seconds"], "seed": seed}
            results.setdefault(name, []).append(summary)  # a finished run (its summary.json) is reused
    # raw pixels and a random-init encoder of the same architecture: one run (seed 0), reused
    base_dir = Path(f"runs/objectives/{args.data}/baselines{'_vit' if args.encoder == 'vit' else ''}")
    baseline = json.loads((base_dir / "summary.json").read_text()) if (base_dir / "summary.json").exists() else \
        run(compose("pretrain", [*data, "trainer.steps=1", "eval.plot=false", "logger.mode=disabled",
                                 *encoder_overrides(args), "trainer.progress=false", f"run_dir={base_dir}"]))
    baselines = {rep: {"eval/image/ssl/linear_probe_accuracy": baseline[f"eval/image/{rep}/linear_probe_accuracy"],
                       "eval/image/ssl/knn_accuracy": baseline[f"eval/image/{rep}/knn_accuracy"],
                       "nmi": kmeans_nmi(base_dir, rep)} for rep in ("raw", "random")}

    def stat(name: str, key: str) -> tuple[float, float]:
        values = [s[key] for s in results[name]]
        return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0

    rows = sorted(results, key=lambda n: -stat(n, "eval/image/ssl/linear_probe_accuracy")[0])
    arch = "vit_tiny (width 64, depth 4)" if args.encoder == "vit" else "convnet width 16"
    command = (f"python experiments/objectives/run.py --data {args.data} --steps {args.steps} --seeds "
               f"{' '.join(map(str, args.seeds))}" + (" --encoder vit" if args.encoder == "vit" else "")
               + (f" --objectives {' '.join(args.objectives)} --tag {args.tag}" if args.tag else ""))
    lines = [f"{args.data}, {args.steps} steps, batch 128, {arch}, seeds {args.seeds} (mean ± std); "
             "pretrain s = wall-clock of build + training on the shared 2-core CPU, as measured.",
             f"Command: `{command}`", "",
             "| objective | " + " | ".join(h for _, h, _ in METRICS) + " |", "|---|" + "---:|" * len(METRICS)]
    for rep, label in (("raw", "*raw pixels*"), ("random", f"*random-init {args.encoder}*")):
        cells = [format(baselines[rep][k], f) if k in baselines[rep] else "–" for k, _, f in METRICS]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    table = {}
    for name in rows:
        stats = {k: stat(name, k) for k, _, _ in METRICS}
        table[name] = {k: {"mean": m, "std": s, "per_seed": [r[k] for r in results[name]]} for k, (m, s) in stats.items()}
        lines.append(f"| {name} | " + " | ".join(f"{stats[k][0]:{f}} ± {stats[k][1]:{f}}" for k, _, f in METRICS) + " |")
    stem = HERE / f"results_{args.data}{args.tag}"
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    stem.with_suffix(".json").write_text(json.dumps(
        {"data": args.data, "steps": args.steps, "encoder": args.encoder, "seeds": args.seeds, "command": command,
         "baselines": baselines, "objectives": table}, indent=2) + "\n")
    with stem.with_suffix(".csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["objective"] + [f"{h} {s}" for _, h, _ in METRICS for s in ("mean", "std")])
        for rep in ("raw", "random"):
            writer.writerow([f"{rep} ({args.encoder})" if rep == "random" else rep]
                            + [x for k, _, _ in METRICS for x in ((baselines[rep][k], "") if k in baselines[rep] else ("", ""))])
        for name in rows:
            writer.writerow([name] + [x for k, _, _ in METRICS for x in (table[name][k]["mean"], table[name][k]["std"])])
    print("\n".join(lines))

    plot(json.loads(stem.with_suffix(".json").read_text()), stem.with_suffix(".png"))


PROBE, KNN, NMI = "eval/image/ssl/linear_probe_accuracy", "eval/image/ssl/knn_accuracy", "nmi"


def plot(summary: dict, path: Path) -> None:
    """One idea: how well each objective's features separate the classes. Linear-probe accuracy and k-means
    NMI (kNN accuracy in tables without NMI) per objective (bars: mean, error bars: ± std over the seeds), the raw-pixel and random-init probes as
    reference lines, scores on [0, 1], key below; wall-clock stays in the table. Drawn from results_*.json."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table, baselines = summary["objectives"], summary["baselines"]
    rows = sorted(table, key=lambda n: -table[n][PROBE]["mean"])
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(rows) + 2), 4.2))
    # the first round's tables have kNN accuracy where later ones have k-means NMI
    second = (NMI, "k-means NMI") if all(NMI in table[n] for n in rows) else (KNN, "kNN accuracy")
    for i, (key, label) in enumerate(((PROBE, "linear-probe accuracy"), second)):
        ax.bar([j + (i - 0.5) * 0.4 for j in range(len(rows))], [table[n][key]["mean"] for n in rows], 0.4,
               yerr=[table[n][key]["std"] for n in rows], capsize=2, color=f"C{i}", label=label)
    ax.axhline(baselines["raw"][PROBE], color="k", ls="--", lw=1, label="raw pixels, linear probe")
    ax.axhline(baselines["random"][PROBE], color="C3", ls=":", lw=1,
               label=f"random-init {summary['encoder']}, linear probe")
    ax.plot([], [], color="black", marker="|", ls="", markersize=10,
            label=f"error bars: mean ± std over {len(summary['seeds'])} seeds")
    ax.set_xticks(range(len(rows)), rows, rotation=45, ha="right")
    ax.set(ylim=(0.0, 1.0), ylabel="test score",
           title=f"objectives on {summary['data']} ({summary['steps']} steps, {summary['encoder']})")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.26), ncol=2, frameon=False)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_only() -> list[Path]:
    """Redraw results_<data><tag>.png from every committed results_<data><tag>.json."""
    drawn = []
    for table in sorted(HERE.glob("results_*.json")):
        plot(json.loads(table.read_text()), table.with_suffix(".png"))
        drawn.append(table.with_suffix(".png"))
    return drawn


if __name__ == "__main__":
    main()
