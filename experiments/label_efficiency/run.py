"""Label efficiency: `python experiments/label_efficiency/run.py [--task digits|…] [--seeds 0 1 2]`.

For each seed: a SimCLR pretraining run (digits: `mmssl pretrain seed=S`, the defaults; spoken_digits:
the audio encoder of `trimodal_digits` alone, SimCLR on waveform views; reused when its folder exists), then for each label fraction four ways to use the labels — supervised from scratch, a
linear head on frozen SSL features, fine-tuning the SSL encoder, semi-supervised (FixMatch + SimCLR on the
unlabelled rest) — each through `mmssl.finetune.run` (the same code as `mmssl finetune RUN …`). Finished
fine-tuning runs (their summary.json) are reused, so an interrupted study continues where it stopped.
Writes results{suffix}.json, results{suffix}.md (mean ± std over seeds) and label_efficiency{suffix}.png
next to this file (suffix: "" for digits, "_audio" for spoken digits, …). Transfer tasks (speech_fr)
fine-tune the encoders pretrained for another task on a different dataset.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
#: method → (label, overrides); every method sees the same labelled subset for a given (seed, fraction)
METHODS = {
    "scratch": ("supervised from scratch", ["from_scratch=true", "mode=full"]),
    "probe": ("linear head on frozen SSL encoder", ["mode=frozen", "head_lr=0.01"]),
    "finetune": ("fine-tuned SSL encoder", ["mode=full"]),
    "semi": ("semi-supervised (FixMatch + SimCLR)", ["mode=semi"]),
}

#: the folder of French digit words the speech_fr transfer reads (written by mmssl.data.synth_speech)
SPEECH_FR = "runs/label_efficiency/speech_fr"

#: task → (output suffix, what the items are, pretraining overrides, fine-tuning overrides)
TASKS = {
    "digits": ("", "digits test split (539 images)", [], []),
    # needs the Debian package dataset-fashion-mnist (/usr/share/datasets/fashion-mnist); 10k training images
    "fashion_mnist": ("_fashion", "Fashion-MNIST test images (the first 1,666; data.limit=10000)",
                      ["data=fashion_mnist", "data.limit=10000"], []),
    "spoken_digits": ("_audio", "trimodal_digits test split (539 clips, unseen voices)",
                      ["data=trimodal_digits", "encoder=trimodal", "~encoder.image", "~encoder.text",
                       "objective.simclr.modality=audio", "objective.simclr.augment=audio_default",
                       "objective.simclr.augment_kwargs={}", "trainer.steps=300"], ["modality=audio"]),
    # transfer: the spoken_digits encoders, fine-tuned on a folder of French digit words (new words, new
    # voices, 16 kHz; synthesised with espeak-ng on first use, as a user's folder of recordings would be read)
    "speech_fr": ("_audio_fr", "French spoken digits (160 clips, 8 held-out voices)",
                  None, ["modality=audio", "data=audio_folder", f"data.root={SPEECH_FR}", "data.split_by_speaker=true"]),
}
#: transfer tasks: their pretraining runs are those of another task, and the folder they read is made once
PRETRAINED_ON = {"speech_fr": "spoken_digits"}
FOLDERS = {"speech_fr": (SPEECH_FR, dict(language="fr", speakers=40, takes=2, sample_rate=16000, seed=1))}


def pretrain(run_dir: Path, seed: int, overrides: list[str]) -> None:
    if (run_dir / "summary.json").exists():
        return
    subprocess.run([sys.executable, "-m", "mmssl.cli", "pretrain", f"seed={seed}", f"run_dir={run_dir}",
                    "trainer.progress=false", "logger.mode=disabled", "threads=1", "eval.plot=false", *overrides],
                   check=True)


def finetune(run_dir: Path, method: str, fraction: float, steps: int, extra: list[str] = (), prefix: str = "") -> dict:
    from mmssl.finetune import run

    name = f"{prefix}{method}-labels{fraction}"
    summary_path = run_dir / "finetune" / name / "summary.json"
    if summary_path.exists():
        return json.loads(summary_path.read_text())
    overrides = [f"labels={fraction}", f"steps={steps}", f"name={name}", "threads=1", "logger.mode=disabled",
                 *METHODS[method][1], *extra]
    summary = run(run_dir, overrides)
    print(f"{run_dir.name} {name}: test accuracy {summary['test/accuracy']:.4f} "
          f"({summary['steps_run']} steps, {summary['time/seconds']:.0f} s)", flush=True)
    return summary


def table(results: dict, fractions: list[float], seeds: list[int]) -> str:
    def cell(method: str, fraction: float) -> str:
        values = [results[f"{method}/{fraction}/{s}"] for s in seeds if f"{method}/{fraction}/{s}" in results]
        if not values:
            return "—"
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{100 * statistics.mean(values):.1f} ± {100 * sd:.1f}"

    header = "| method | " + " | ".join(f"{100 * f:g}% labels" for f in fractions) + " |"
    lines = [header, "|---|" + "---:|" * len(fractions)]
    for method, (label, _) in METHODS.items():
        cells = [cell(method, f) for f in fractions]
        if any(c != "—" for c in cells):  # methods that did not run have no row
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: dict, fractions: list[float], seeds: list[int], path: Path, what: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.6, 3.8))
    for method, (label, _) in METHODS.items():
        xs, means, sds = [], [], []
        for f in fractions:
            values = [results[f"{method}/{f}/{s}"] for s in seeds if f"{method}/{f}/{s}" in results]
            if values:
                xs.append(f)
                means.append(100 * statistics.mean(values))
                sds.append(100 * statistics.stdev(values) if len(values) > 1 else 0.0)
        if not xs:
            ax.plot([], [])  # keep each method's colour across the studies' plots
            continue
        ax.errorbar(xs, means, yerr=sds, marker="o", capsize=3, label=label)
    ax.set_xscale("log")
    ax.set_xticks(fractions, [f"{100 * f:g}%" for f in fractions])
    ax.set_xlabel("labelled fraction of the training split")
    ax.set_ylabel(f"test accuracy (%)\n(mean; error bars: std over {len(seeds)} seeds)")
    ax.set_ylim(0, 102)  # headroom for the error bars at 100%
    ax.set_title(f"Label efficiency: {what}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_only(task: str) -> Path:
    """Redraw a task's PNG from its committed results<suffix>.json (fractions and seeds read from its keys)."""
    suffix, what, _, _ = TASKS[task]
    path = HERE / f"results{suffix}.json"
    if not path.exists():
        sys.exit(f"error: {path} does not exist; run the study first")
    results = json.loads(path.read_text())
    keys = [k.split("/") for k in results]
    fractions = sorted({float(f) for _, f, _ in keys})
    seeds = sorted({int(s) for _, _, s in keys})
    png = HERE / f"label_efficiency{suffix}.png"
    plot(results, fractions, seeds, png, what)
    return png


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", default="digits", choices=list(TASKS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.05, 0.1, 1.0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--semi-fractions", type=float, nargs="+", default=None,
                        help="label fractions the (slow) semi-supervised method runs at (default: every fraction < 1)")
    parser.add_argument("--steps", type=int, default=300, help="max fine-tuning steps")
    parser.add_argument("--pretrain-steps", type=int, default=None, help="pretraining steps (default: the task's)")
    parser.add_argument("--out", default="runs/label_efficiency")
    parser.add_argument("--plot-only", action="store_true", help="only redraw --task's PNG from its results JSON")
    args = parser.parse_args()
    if args.plot_only:
        print(plot_only(args.task))
        return
    suffix, what, pretrain_overrides, finetune_overrides = TASKS[args.task]
    pretrain_suffix = suffix
    if args.task in PRETRAINED_ON:
        pretrain_suffix, _, pretrain_overrides, _ = TASKS[PRETRAINED_ON[args.task]]
    if args.task in FOLDERS and not (Path(FOLDERS[args.task][0]) / "manifest.csv").exists():
        from mmssl.data.synth_speech import synthesise

        synthesise(Path(FOLDERS[args.task][0]), **FOLDERS[args.task][1])
    if args.pretrain_steps:
        pretrain_overrides = [*pretrain_overrides, f"trainer.steps={args.pretrain_steps}"]
    import torch

    torch.set_num_threads(1)
    results: dict[str, float] = {}
    for seed in args.seeds:
        run_dir = Path(args.out) / f"pretrain{pretrain_suffix}_seed{seed}"
        pretrain(run_dir, seed, pretrain_overrides)
        for fraction in args.fractions:
            for method in args.methods:
                if method == "semi" and (fraction >= 1 or fraction not in (args.semi_fractions or [fraction])):
                    continue  # at 100% labels no unlabelled data is left: semi-supervised is undefined
                results[f"{method}/{fraction}/{seed}"] = finetune(
                    run_dir, method, fraction, args.steps, finetune_overrides,
                    prefix=f"{args.task}-" if args.task in PRETRAINED_ON else "")["test/accuracy"]
    (HERE / f"results{suffix}.json").write_text(json.dumps(results, indent=1) + "\n")
    text = (f"Test accuracy (%) on the {what}, mean ± std over seeds {args.seeds}; {args.steps} steps max with "
            f"early stopping.\nCommand: `python experiments/label_efficiency/run.py {' '.join(sys.argv[1:])}`\n\n{table(results, args.fractions, args.seeds)}\n")
    (HERE / f"results{suffix}.md").write_text(text)
    plot(results, args.fractions, args.seeds, HERE / f"label_efficiency{suffix}.png", what)
    print(text)


if __name__ == "__main__":
    main()
