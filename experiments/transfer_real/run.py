"""A trained run on data mmssl does not ship: `python experiments/transfer_real/run.py [--seeds 0 1 2] [--jobs 2]`.

The data: OpenCV's 5,000 handwritten 20×20 digits (Debian ``opencv-doc``), cut into an image folder by
``cut_digits.py`` (written once to ``<out>/digits20``). Per seed, every step a CLI command:

1. ``mmssl pretrain data=image_folder data.root=FOLDER data.size=20 +data.augment={…}`` — SimCLR on the
   default conv net (grey, width 32), ``configs/pretrain.yaml`` defaults with ``configs/data/digits.yaml``'s
   view augmentation, ``trainer.steps`` 200 (instead of 600, so a run takes ≲ 3 min on one CPU thread);
2. ``mmssl pretrain`` (the defaults: scikit-learn's 8×8 digits, 600 steps) — the cross-dataset encoder;
3. ``mmssl eval RUN data=image_folder data.root=FOLDER data.size=S`` for both runs (S = 20 and 8: the
   size each encoder read): linear probe, kNN, k-means NMI/ARI of the SSL encoder, raw pixels and a
   random-init encoder on the same 80/20 split (stratified, fixed by the seed);
4. ``mmssl finetune RUN labels=K mode=frozen|full`` and ``from_scratch=true mode=full`` on the 20×20 run for
   K in 1, 5, 10, 50 per class and 1.0 (all 400 per class), plus the raw-pixel probe and kNN on the same
   labelled subset (the probe's solver, in this process: the finetune command has no raw-pixel mode).

Finished steps (their summary/results JSON) are reused, so an interrupted study continues. At most
``--jobs`` commands run at once, each on one thread. Writes ``results.json``, ``results.md`` and
``label_efficiency.png`` next to this file; run folders stay under ``--out`` (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from cut_digits import SHEET, cut  # noqa: E402

#: configs/data/digits.yaml's view augmentation (image_folder's default is {}: the objective's own views)
AUGMENT = "+data.augment={crop_scale:[0.5,1.0],flip_p:0.0,degrees:15.0,jitter:0.4,hue:0.0,grayscale_p:0.0,blur_p:0.0,noise_std:0.05}"
PRETRAIN_STEPS = 200
LABELS = ["1", "5", "10", "50", "1.0"]
#: label-efficiency method → (label, finetune overrides); None: a raw-pixel classifier computed here
METHODS = {
    "raw": ("raw pixels, linear probe", None),
    "raw_knn": ("raw pixels, kNN (k=20, cosine)", None),
    "frozen": ("SSL encoder frozen, linear probe (mode=frozen)", ["mode=frozen"]),
    "full": ("SSL encoder fine-tuned (mode=full)", ["mode=full"]),
    "scratch": ("same conv net from scratch (from_scratch=true mode=full)", ["mode=full", "from_scratch=true"]),
}
REPS = [("raw", "raw pixels"), ("random", "random-init encoder"), ("ssl", "SimCLR encoder")]
METRICS = [("linear_probe_accuracy", "linear probe"), ("knn_accuracy", "kNN (k=20)"),
           ("kmeans_nmi", "k-means NMI"), ("kmeans_ari", "k-means ARI")]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "mmssl.cli", *args]


def pretrain_cmd(kind: str, seed: int, run_dir: Path, folder: Path) -> list[str]:
    common = ["trainer.progress=false", "eval.plot=false", "threads=1", f"seed={seed}", f"run_dir={run_dir}"]
    if kind == "ssl20":
        return cli("pretrain", "data=image_folder", f"data.root={folder}", "data.size=20", AUGMENT,
                   f"trainer.steps={PRETRAIN_STEPS}", *common)
    return cli("pretrain", *common)  # digits8: every default (data=digits, 8×8, 600 steps)


def eval_cmd(run_dir: Path, folder: Path, size: int) -> list[str]:
    return cli("eval", str(run_dir), "data=image_folder", f"data.root={folder}", f"data.size={size}", "eval.plot=false")


def finetune_cmd(run_dir: Path, method: str, labels: str) -> list[str]:
    return cli("finetune", str(run_dir), f"labels={labels}", *METHODS[method][1], f"name={method}-labels{labels}",
               "threads=1")


def run_jobs(jobs: list[tuple[str, list[str], Path]], parallel: int, logs: Path) -> None:
    """Run (name, command, output that marks it done) jobs, ``parallel`` at a time; stop on the first failure."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    todo = [j for j in jobs if not j[2].exists()]
    running: list[tuple[str, subprocess.Popen, float]] = []
    logs.mkdir(parents=True, exist_ok=True)
    while todo or running:
        while todo and len(running) < parallel:
            name, cmd, _ = todo.pop(0)
            print(f"start {name}: {' '.join(cmd[2:])}", flush=True)
            with open(logs / f"{name}.log", "w") as log:
                running.append((name, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), time.time()))
        time.sleep(1)
        for item in list(running):
            name, proc, t0 = item
            if proc.poll() is None:
                continue
            running.remove(item)
            if proc.returncode:
                for _, other, _ in running:
                    other.terminate()
                raise SystemExit(f"error: {name} failed (exit {proc.returncode}); see {logs / (name + '.log')}")
            print(f"done  {name} ({time.time() - t0:.0f} s)", flush=True)


def eval_dir(run_dir: Path, folder: Path) -> Path:
    return run_dir / "eval" / f"image_folder-{folder.name}"


def raw_label_curve(run_dir: Path, seed: int, labels: list[str]) -> dict[str, dict[str, float]]:
    """Raw-pixel linear probe and kNN on the labelled subset `mmssl finetune` draws (same split, seed, solver):
    ``{"raw": {labels: accuracy}, "raw_knn": {…}}``."""
    import torch
    from omegaconf import OmegaConf

    from mmssl.build import build_data
    from mmssl.eval.probes import knn_accuracy, linear_probe_accuracy, raw_features
    from mmssl.finetune.parts import balanced_subset

    cfg = OmegaConf.load(run_dir / "config.yaml")
    data = build_data(cfg)
    test_x, test_y = raw_features(data.test, "image")
    out: dict[str, dict[str, float]] = {"raw": {}, "raw_knn": {}}
    for k in labels:
        amount = float(k) if "." in k else int(k)
        idx = torch.cat(balanced_subset(data.train.labels, amount, seed, data.train.classes))
        x, y = raw_features(data.train.subset(idx, "labelled"), "image")
        out["raw"][k] = linear_probe_accuracy(x, y, test_x, test_y, C=float(cfg.eval.linear_probe_C))
        out["raw_knn"][k] = knn_accuracy(x, y, test_x, test_y, k=int(cfg.eval.knn_k))  # k capped at the labels
    return out


def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def fmt(values: list[float], scale: float = 1.0, digits: int = 3) -> str:
    m, s = mean_sd([scale * v for v in values])
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def plot(results: dict, seeds: list[int], path: Path, n_train_per_class: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [n_train_per_class if k == "1.0" else int(k) for k in LABELS]
    fig, ax = plt.subplots(figsize=(8.4, 3.8))
    for method, (label, _) in METHODS.items():
        stats = [mean_sd([100 * results["label_efficiency"][method][k][str(s)] for s in seeds]) for k in LABELS]
        ax.errorbar(xs, [m for m, _ in stats], yerr=[s for _, s in stats], marker="o", capsize=3, label=label)
    ax.set_xscale("log")
    ax.set_xticks(xs, [f"{x}\n(all)" if k == "1.0" else str(x) for x, k in zip(xs, LABELS)])
    ax.set_xlabel("labelled training images per class")
    ax.set_ylabel(f"test accuracy (%)\n(mean; error bars: std over {len(seeds)} seeds)")
    ax.set_ylim(0, 102)  # headroom for the error bars near 100%
    ax.set_title("OpenCV 20×20 digits: label efficiency on 1,000 held-out images\n"
                 "(seed = pretraining run, split and labelled subset)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=2, help="commands at once (each on one thread)")
    parser.add_argument("--out", default="runs/transfer_real")
    parser.add_argument("--sheet", default=str(SHEET))
    parser.add_argument("--plot-only", action="store_true", help="only redraw label_efficiency.png from results.json")
    args = parser.parse_args()
    if args.plot_only:
        results = json.loads((HERE / "results.json").read_text())
        plot(results, results["seeds"], HERE / "label_efficiency.png", results["train_per_class"])
        return
    out = Path(args.out)
    folder = out / "digits20"
    if not (folder / "9").is_dir():
        print(f"cut {cut(args.sheet, folder)} digits into {folder}", flush=True)
    runs = {(kind, s): out / f"{kind}_seed{s}" for kind in ("ssl20", "digits8") for s in args.seeds}
    logs = out / "logs"
    run_jobs([(f"{kind}_seed{s}", pretrain_cmd(kind, s, d, folder), d / "summary.json") for (kind, s), d in runs.items()],
             args.jobs, logs)
    jobs = [(f"eval_{kind}_seed{s}", eval_cmd(d, folder, 20 if kind == "ssl20" else 8), eval_dir(d, folder) / "results.json")
            for (kind, s), d in runs.items()]
    for s in args.seeds:
        d = runs["ssl20", s]
        jobs += [(f"finetune_seed{s}_{m}-labels{k}", finetune_cmd(d, m, k), d / "finetune" / f"{m}-labels{k}" / "summary.json")
                 for m in METHODS if METHODS[m][1] is not None for k in LABELS]
    run_jobs(jobs, args.jobs, logs)

    results: dict = {"seeds": args.seeds, "data": "OpenCV digits.png, 5,000 20×20 digits; 80/20 split per seed",
                     "pretrain_steps": {"ssl20": PRETRAIN_STEPS, "digits8": 600}}
    for kind in ("ssl20", "digits8"):
        results[kind] = {}
        for s in args.seeds:
            got = json.loads((eval_dir(runs[kind, s], folder) / "results.json").read_text())["results"]
            summary = json.loads((runs[kind, s] / "summary.json").read_text())
            results[kind][str(s)] = {**{k.removeprefix("image/"): v for k, v in got.items()},
                                     "pretrain_train_seconds": summary["time/train_seconds"]}
    curve: dict = {m: {k: {} for k in LABELS} for m in METHODS}
    for s in args.seeds:
        d = runs["ssl20", s]
        for m, accs in raw_label_curve(d, s, LABELS).items():
            for k, acc in accs.items():
                curve[m][k][str(s)] = acc
        for m in METHODS:
            if METHODS[m][1] is not None:
                for k in LABELS:
                    curve[m][k][str(s)] = json.loads((d / "finetune" / f"{m}-labels{k}" / "summary.json").read_text())["test/accuracy"]
    results["label_efficiency"] = curve
    full = json.loads((runs["ssl20", args.seeds[0]] / "finetune" / "frozen-labels1.0" / "summary.json").read_text())
    results["train_per_class"] = full["labelled/train_items"] // 10  # the split is stratified: 400 of every digit
    (HERE / "results.json").write_text(json.dumps(results, indent=1) + "\n")

    seeds = [str(s) for s in args.seeds]
    lines = [f"Seeds {args.seeds}, mean ± std. Command: `python experiments/transfer_real/run.py "
             f"--seeds {' '.join(seeds)}`", "",
             "Frozen features on the 1,000 held-out 20×20 digits (probe and kNN fit on the 4,000 training images):", "",
             "| encoder | representation | " + " | ".join(label for _, label in METRICS) + " |",
             "|---|---|" + "---:|" * len(METRICS)]
    for kind, size, what in (("ssl20", 20, "pretrained on these 20×20 digits"),
                             ("digits8", 8, "cross-dataset: pretrained on sklearn's 8×8 digits, images resized to 8×8")):
        for rep, label in REPS:
            cells = [fmt([results[kind][s][f"{rep}/{key}"] for s in seeds]) for key, _ in METRICS]
            lines.append(f"| {what} | {label} ({size}×{size} input) | " + " | ".join(cells) + " |")
    lines += ["", "Label efficiency, test accuracy (%):", "",
              "| method | " + " | ".join("all (400)" if k == "1.0" else k for k in LABELS) + " |",
              "|---|" + "---:|" * len(LABELS)]
    for m, (label, _) in METHODS.items():
        lines.append(f"| {label} | " + " | ".join(fmt([curve[m][k][s] for s in seeds], 100, 1) for k in LABELS) + " |")
    secs = [results[kind][s]["pretrain_train_seconds"] for kind in ("ssl20",) for s in seeds]
    lines += ["", f"Pretraining (20×20, {PRETRAIN_STEPS} steps, 1 thread): {min(secs):.0f}–{max(secs):.0f} s of training per run."]
    (HERE / "results.md").write_text("\n".join(lines) + "\n")
    plot(results, args.seeds, HERE / "label_efficiency.png", results["train_per_class"])
    print("\n".join(lines))


if __name__ == "__main__":
    main()
