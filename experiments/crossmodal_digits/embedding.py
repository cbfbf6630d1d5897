"""The joint space of a tri-modal binding run, drawn from a small committed table.

    python experiments/crossmodal_digits/embedding.py runs/crossmodal_digits/seed0   # → crossmodal_embedding.{csv,png}
    python experiments/crossmodal_digits/embedding.py --plot-only                     # the PNG from the committed CSV

Embeds the run's test split in its joint space per modality (``mmssl.load_run(...).embed``), fits one 2-D PCA
on all modalities together (shared axes: aligned modalities land on the same class clusters) and writes
crossmodal_embedding.csv (modality, class, pc1, pc2; one row per test item and modality) and the plot from it.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

HERE = Path(__file__).parent
TABLE, FIGURE = HERE / "crossmodal_embedding.csv", HERE / "crossmodal_embedding.png"


def write_table(run_dir: Path, path: Path) -> None:
    import numpy as np
    import torch
    from omegaconf import OmegaConf
    from sklearn.decomposition import PCA

    import mmssl
    from mmssl.build import build_data

    run = mmssl.load_run(run_dir)
    split = build_data(OmegaConf.create(run.config)).test
    modalities = [m for m in run.encoders if m in split.modalities]
    with torch.no_grad():
        z = {m: run.embed(m, split.data[m]).numpy() for m in modalities}
    pca = PCA(n_components=2, random_state=0).fit(np.concatenate(list(z.values())))
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["modality", "class", "pc1", "pc2"])
        for m in modalities:
            for label, (x, y) in sorted(zip(split.labels.tolist(), pca.transform(z[m]).tolist()), key=lambda t: t[0]):
                writer.writerow([m, split.classes[label], f"{x:.4f}", f"{y:.4f}"])


def plot(table: Path, path: Path) -> None:
    """One idea: the three modalities form the same ten class clusters in the joint space. One panel per
    modality on the shared PCA axes, one colour per class; the class key below the panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    modalities = list(dict.fromkeys(r["modality"] for r in rows))
    classes = list(dict.fromkeys(r["class"] for r in rows))  # the table is sorted by class index
    fig, axes = plt.subplots(1, len(modalities), figsize=(4 * len(modalities), 4.2), sharex=True, sharey=True,
                             squeeze=False)
    for ax, m in zip(axes[0], modalities):
        for i, c in enumerate(classes):
            pts = [(float(r["pc1"]), float(r["pc2"])) for r in rows if r["modality"] == m and r["class"] == c]
            ax.scatter(*zip(*pts), s=5, color=plt.cm.tab10(i), label=c)
        ax.set(title=f"{m} test items", xlabel="joint-space PC 1")
        ax.grid(alpha=0.2)
    axes[0, 0].set_ylabel("joint-space PC 2 (one PCA for all modalities)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(classes), frameon=False, fontsize=8, markerscale=2,
               title="class", title_fontsize=8, bbox_to_anchor=(0.5, -0.12))
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", nargs="?", help="a run folder of run.sh (e.g. runs/crossmodal_digits/seed0)")
    parser.add_argument("--plot-only", action="store_true", help="only redraw the PNG from the committed CSV")
    args = parser.parse_args()
    if not args.plot_only:
        if args.run is None:
            sys.exit("error: pass a run folder (runs/crossmodal_digits/seed0) or --plot-only")
        write_table(Path(args.run), TABLE)
    elif not TABLE.exists():
        sys.exit(f"error: {TABLE} does not exist; run embedding.py RUN_DIR first")
    plot(TABLE, FIGURE)


if __name__ == "__main__":
    main()
