"""Every image objective on digits or Fashion-MNIST under one step budget: probes, rank, k-means NMI, wall-clock.

    python experiments/objectives/run.py                       # 3 seeds, 300 steps each (~25 min on 2 cores)
    python experiments/objectives/run.py --seeds 0 --steps 50  # a quick look
    python experiments/objectives/run.py --data fashion_mnist  # when /usr/share/datasets/fashion-mnist exists
    python experiments/objectives/run.py --encoder vit --objectives mae ijepa data2vec simclr --tag _vit
    python experiments/objectives/run.py --plot-only experiments/objectives/results_digits_new_methods.json

Learning rate (``--lr-from``): ``recipe`` (the default) gives each objective the AdamW lr (and β) of its
``configs/recipe/<name>_digits.yaml`` — DINO 5e-4, BiGAN/context encoder 2e-4 with β₁ 0.5 (so the
discriminator's 4e-4 is the larger, as TTUR wants), SwAV/DeepCluster-v2/NNCLR 1e-3, … — and the uniform
2e-3 (the trainer default) to objectives whose digits recipe uses LARS or does not exist; ``uniform`` is
the first rounds' protocol (2e-3 for all: DINO at 4× its recipe lr did not learn, and BiGAN's encoder and
generator ran at 5× its discriminator, TTUR inverted). A run whose lr is not 2e-3 has ``_lr<lr>`` in its
folder name, so runs of the two protocols are never mixed.

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
import yaml

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
#: per-objective settings of the study on its conv net, with the folder suffix that keeps their runs apart:
#: DINO's head with BatchNorm (its conv recipes' setting; without it the teacher stays near uniform)
STUDY_OVERRIDES = {("dino", "convnet"): ("_bnhead", ["objective.dino.use_bn_in_head=true"])}


UNIFORM_LR = 2e-3  # the trainer default: the lr of every objective in the first rounds of the study
RECIPES = HERE.parent.parent / "configs" / "recipe"


def study_optimiser(name: str, lr_from: str = "recipe") -> dict:
    """``{"lr": …, "betas": […]}`` of one objective: its digits recipe's AdamW settings (``lr_from="recipe"``)
    or, for ``"uniform"`` and objectives whose digits recipe is LARS/SGD or missing, ``UNIFORM_LR``."""
    path = RECIPES / f"{name}_digits.yaml"
    trainer = yaml.safe_load(path.read_text()).get("trainer", {}) if path.exists() else {}
    if lr_from != "recipe" or trainer.get("optimizer", "adamw") != "adamw" or "lr" not in trainer:
        return {"lr": UNIFORM_LR}
    return {"lr": float(trainer["lr"])} | ({"betas": list(trainer["betas"])} if "betas" in trainer else {})


def study_override(args, name: str) -> tuple[str, list[str]]:
    """(folder suffix, overrides) of one objective's ``STUDY_OVERRIDES`` entry for the run's encoder; none: ("", [])."""
    return STUDY_OVERRIDES.get((name, args.encoder), ("", []))


def folder(args, name: str, seed: int) -> str:
    """The run folder of one (objective, seed); the step budget (300: the original layout), a ViT and an lr other
    than the uniform 2e-3, the study's per-objective settings (``STUDY_OVERRIDES``) and a forced precision are
    part of it."""
    budget = "" if args.steps == 300 else f"_{args.steps}steps"
    lr = study_optimiser(name, args.lr_from)["lr"]
    tag = "" if lr == UNIFORM_LR else f"_lr{lr:g}"
    tag += study_override(args, name)[0] + ("" if args.precision == "auto" else f"_{args.precision}")
    return f"runs/objectives/{args.data}{budget}{'_vit' if args.encoder == 'vit' else ''}/{name}{tag}/seed{seed}"


def study_settings(args, name: str) -> list[str]:
    """The overrides one objective gets on top of its own config in this study (``DATA_OVERRIDES``,
    ``STUDY_OVERRIDES``); recorded in the table's header and JSON."""
    return DATA_OVERRIDES.get((name, args.data), []) + study_override(args, name)[1]


def study_command(args) -> str:
    """The command line that reproduces a table."""
    return (f"python experiments/objectives/run.py --data {args.data} --steps {args.steps} --seeds "
            f"{' '.join(map(str, args.seeds))}" + (" --encoder vit" if args.encoder == "vit" else "")
            + (f" --objectives {' '.join(args.objectives)} --tag {args.tag}" if args.tag else "")
            + (" --lr-from uniform" if args.lr_from == "uniform" else "")
            + (f" --precision {args.precision}" if args.precision != "auto" else ""))


def header(args, rows: list[str], lrs: dict[str, dict], command: str, precisions: dict[str, list[str]]) -> list[str]:
    """The lines above a results table: protocol, lr per objective, the study's per-objective settings, the
    precision the runs trained in (their precision.json), command."""
    arch = "vit_tiny (width 64, depth 4)" if args.encoder == "vit" else "convnet width 16"
    lines = [f"{args.data}, {args.steps} steps, batch 128, {arch}, seeds {args.seeds} (mean ± std); "
             "pretrain s = wall-clock of build + training on the shared 2-core CPU, as measured.",
             "AdamW lr per objective (" + ("its digits recipe's" if args.lr_from == "recipe" else "uniform") + "): "
             + ", ".join(f"{n} {o['lr']:g}" + (f" β {tuple(o['betas'])}" if "betas" in o else "") for n, o in lrs.items())
             + "."]
    settings = {n: o for n in rows if (o := study_settings(args, n))}
    if settings:
        lines.append("Study settings: " + "; ".join(f"{n} {' '.join(o)}" for n, o in settings.items()) + ".")
    used = sorted({p for names in precisions.values() for p in names})
    lines.append(f"Precision: trainer.precision={args.precision} → {' / '.join(used)} (each run's precision.json).")
    return [*lines, f"Command: `{command}`"]


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


ALL = Path("all")  # --plot-only without a JSON: every committed table


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--data", default="digits")
    parser.add_argument("--encoder", default="convnet", choices=["convnet", "vit"])
    parser.add_argument("--objectives", nargs="+", default=IMAGE_OBJECTIVES)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tag", default="", help="suffix of the result files (results_<data><tag>.md/json/csv/png)")
    parser.add_argument("--lr-from", default="recipe", choices=["recipe", "uniform"],
                        help="recipe: each objective's digits-recipe AdamW lr; uniform: 2e-3 for all (the first rounds)")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                        help="trainer.precision of every run (auto: what the machine's probe picks; recorded per run)")
    parser.add_argument("--plot-only", type=Path, nargs="?", const=ALL, default=None, metavar="JSON",
                        help="redraw the figures of a committed results_*.json (no JSON: of every one) and exit (no runs)")
    args = parser.parse_args()
    if args.plot_only is not None:
        tables = sorted(HERE.glob("results_*.json")) if args.plot_only == ALL else [args.plot_only]
        for table in tables:
            plot(json.loads(table.read_text()), table.with_suffix(""))
            print(table.with_suffix(".png"))
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
                         f"run_dir={run_dir}", f"trainer.precision={args.precision}"]
            optimiser = study_optimiser(name, args.lr_from)
            overrides += [f"trainer.lr={optimiser['lr']}"] + (
                [f"trainer.betas=[{','.join(map(str, optimiser['betas']))}]"] if "betas" in optimiser else [])
            if name in RESIZED and args.data != "digits":
                overrides.append(f"objective.{name}.image_size=28")
            overrides += study_settings(args, name)
            done = run_dir / "summary.json"
            summary = json.loads(done.read_text()) if done.exists() else run(compose("pretrain", overrides))
            summary = summary | {"nmi": kmeans_nmi(run_dir), "seconds": summary["time/train_seconds"], "seed": seed,
                                 "precision": json.loads((run_dir / "precision.json").read_text())["name"]}
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
    command = study_command(args)
    lrs = {name: study_optimiser(name, args.lr_from) for name in rows}
    precisions = {name: sorted({r["precision"] for r in results[name]}) for name in rows}
    lines = [*header(args, rows, lrs, command, precisions), "",
             "| objective | " + " | ".join(h for _, h, _ in METRICS) + " |", "|---|" + "---:|" * len(METRICS)]
    for rep, label in (("raw", "*raw pixels*"), ("random", f"*random-init {args.encoder}*")):
        cells = [format(baselines[rep][k], f) if k in baselines[rep] else "–" for k, _, f in METRICS]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    table = {}
    for name in rows:
        stats = {k: stat(name, k) for k, _, _ in METRICS}
        table[name] = {k: {"mean": m, "std": s, "per_seed": [r[k] for r in results[name]]} for k, (m, s) in stats.items()}
        table[name]["optimiser"] = lrs[name]
        table[name]["overrides"] = study_settings(args, name)
        table[name]["precision"] = precisions[name]
        lines.append(f"| {name} | " + " | ".join(f"{stats[k][0]:{f}} ± {stats[k][1]:{f}}" for k, _, f in METRICS) + " |")
    stem = HERE / f"results_{args.data}{args.tag}"
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    stem.with_suffix(".json").write_text(json.dumps(
        {"data": args.data, "steps": args.steps, "encoder": args.encoder, "seeds": args.seeds, "command": command,
         "lr_from": args.lr_from, "precision": args.precision, "baselines": baselines, "objectives": table}, indent=2) + "\n")
    with stem.with_suffix(".csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["objective"] + [f"{h} {s}" for _, h, _ in METRICS for s in ("mean", "std")])
        for rep in ("raw", "random"):
            writer.writerow([f"{rep} ({args.encoder})" if rep == "random" else rep]
                            + [x for k, _, _ in METRICS for x in ((baselines[rep][k], "") if k in baselines[rep] else ("", ""))])
        for name in rows:
            writer.writerow([name] + [x for k, _, _ in METRICS for x in (table[name][k]["mean"], table[name][k]["std"])])
    print("\n".join(lines))

    plot(json.loads(stem.with_suffix(".json").read_text()), stem)


def plot(results: dict, stem: Path) -> None:
    """Two figures from a results JSON, one idea each: ``<stem>.png`` the linear-probe accuracy per objective
    (y from 0, the raw-pixel and random-init probes as lines, error bars = std over the seeds) and
    ``<stem>_wallclock.png`` the pretraining wall-clock; legends sit outside the data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table, baselines, n_seeds = results["objectives"], results["baselines"], len(results["seeds"])
    probe = "eval/image/ssl/linear_probe_accuracy"
    rows = sorted(table, key=lambda n: -table[n][probe]["mean"])
    where = f"{results['data']}, {results['steps']} steps, {results['encoder']}"
    spread = f"mean ± std over {n_seeds} seeds"

    fig, ax = plt.subplots(figsize=(max(5.0, 0.7 * len(rows) + 3.5), 3.8))
    ax.bar(range(len(rows)), [table[n][probe]["mean"] for n in rows], 0.6, yerr=[table[n][probe]["std"] for n in rows],
           capsize=3, color="C0", label=f"linear probe ({spread})")
    ax.axhline(baselines["raw"][probe], color="k", ls="--", lw=1, label="raw pixels")
    ax.axhline(baselines["random"][probe], color="C3", ls=":", lw=1.5, label=f"random-init {results['encoder']}")
    ax.set_xticks(range(len(rows)), rows, rotation=30, ha="right")
    ax.set(ylim=(0.0, 1.0), ylabel="test linear-probe accuracy", title=f"linear probe per objective\n({where})")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.28), ncol=2, frameon=False)
    fig.savefig(stem.with_suffix(".png"), dpi=110, bbox_inches="tight")
    plt.close(fig)

    if not all("seconds" in table[n] for n in rows):  # the first rounds' tables (transcribed) have no timings
        return
    fig, ax = plt.subplots(figsize=(6.5, 0.35 * len(rows) + 1.6))
    ax.barh(rows, [table[n]["seconds"]["mean"] for n in rows], xerr=[table[n]["seconds"]["std"] for n in rows],
            capsize=3, color="C7", label=spread)
    ax.invert_yaxis()
    ax.set(xlim=(0, None), xlabel="pretraining wall-clock, s (build + training, shared 2-core CPU)",
           title=f"pretraining wall-clock\n({where})")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.25), frameon=False)
    fig.savefig(stem.parent / f"{stem.name}_wallclock.png", dpi=110, bbox_inches="tight")
    plt.close(fig)

if __name__ == "__main__":
    main()
