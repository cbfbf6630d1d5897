"""Plots written as PNG files (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mmssl.io import save_figure


def embedding_plot(features: np.ndarray, labels: np.ndarray, path: str | Path, title: str = "",
                   class_names: list[str] | None = None, seed: int = 0) -> Path:
    """2-D t-SNE of (N, D) features coloured by label (UMAP when ``umap-learn`` is installed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    try:
        import umap  # type: ignore

        xy = umap.UMAP(random_state=seed).fit_transform(features)
        method = "UMAP"
    except ImportError:
        from sklearn.manifold import TSNE

        xy = TSNE(n_components=2, init="pca", random_state=seed, perplexity=min(30, len(features) - 1)).fit_transform(features)
        method = "t-SNE"
    fig, ax = plt.subplots(figsize=(5.5, 5))
    sc = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="tab10", s=6)
    classes = np.unique(labels)
    handles = [plt.Line2D([], [], marker="o", ls="", color=sc.cmap(sc.norm(c))) for c in classes]
    names = [class_names[c] if class_names and c < len(class_names) else str(c) for c in classes]
    ax.legend(handles, names, fontsize=7, loc="best", markerscale=0.8)
    ax.set_title(f"{title} ({method})")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path, dpi=120)
    plt.close(fig)
    return path
