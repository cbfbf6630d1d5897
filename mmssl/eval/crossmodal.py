"""Cross-modal evaluation: retrieval R@K between every modality pair, zero-shot classification from text, plots.

Retrieval counts a hit when one of the top-K retrieved items has the query's **class label**
(class-level recall). Paired datasets such as ``trimodal_digits`` pair items by class and reuse clips
and prompts, so "the" partner of a query is not unique and item-level recall would penalise a
retrieved twin. Where both modalities of a pair have no duplicate rows (pairs are 1:1), exact-item
recall is reported too (``retrieval_exact/...``): a hit when the query's own partner is in the top K.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mmssl.data.base import ArrayDataset, iterate
from mmssl.encoders.base import Encoder
from mmssl.errors import DataError
from mmssl.io import save_figure
from mmssl.types import TEXT

KS = (1, 5, 10)


@torch.no_grad()
def embed(encoders: Mapping[str, Encoder], split: ArrayDataset, batch_size: int = 256,
          projections: Mapping | None = None) -> dict[str, torch.Tensor]:
    """Unit-norm embeddings (N, D) per modality: pooled encoder output, through ``projections[m]`` when given."""
    out = {}
    for m, encoder in encoders.items():
        head = projections[m] if projections is not None and m in projections else None
        modules = [x for x in (encoder, head) if x is not None]
        modes = [x.training for x in modules]
        for x in modules:
            x.eval()
        device = next(encoder.parameters()).device
        chunks = []
        for batch in iterate(split, batch_size):
            z = encoder(batch[m].to(device)).pooled
            chunks.append((head(z) if head is not None else z).float().cpu())
        for x, mode in zip(modules, modes):
            x.train(mode)
        out[m] = F.normalize(torch.cat(chunks), dim=1)
    return out


def recall_at_k(sim: torch.Tensor, query_labels: torch.Tensor, key_labels: torch.Tensor,
                ks: tuple[int, ...] = KS) -> dict[int, float]:
    """Class-level recall: fraction of queries (rows of ``sim`` (Nq, Nk)) with a same-label key in their top K."""
    top = sim.topk(min(max(ks), sim.shape[1]), dim=1).indices  # (Nq, K)
    hit = key_labels[top] == query_labels.unsqueeze(1)
    return {k: hit[:, :k].any(dim=1).float().mean().item() for k in ks}


def exact_recall_at_k(sim: torch.Tensor, ks: tuple[int, ...] = KS) -> dict[int, float]:
    """Item-level recall for 1:1 pairs: fraction of queries i whose own key i is in their top K."""
    top = sim.topk(min(max(ks), sim.shape[1]), dim=1).indices
    hit = top == torch.arange(len(sim)).unsqueeze(1)
    return {k: hit[:, :k].any(dim=1).float().mean().item() for k in ks}


def _unique_rows(x: torch.Tensor) -> bool:
    return len(torch.unique(x.flatten(1), dim=0)) == len(x)


@torch.no_grad()
def zeroshot_accuracy(z: torch.Tensor, labels: torch.Tensor, class_text: torch.Tensor) -> float:
    """Accuracy of ``argmax_c cos(z_i, t_c)`` for embeddings z (N, D) against class text embeddings (C, D)."""
    return (torch.argmax(z @ class_text.T, dim=1) == labels).float().mean().item()


@torch.no_grad()
def class_text_embeddings(encoder: Encoder, classes: list[str], context_length: int, head=None,
                          templates: list[str] | None = None) -> torch.Tensor:
    """(C, D) unit-norm mean embedding of every template filled with each class ({w}: name, {d}: index)."""
    from mmssl.data.tokenize import tokenize
    from mmssl.data.trimodal import PROMPTS

    templates = templates or PROMPTS
    ids = tokenize([t.format(w=w, d=i) for i, w in enumerate(classes) for t in templates], context_length)
    split = ArrayDataset({TEXT: ids}, name="prompts")
    z = embed({TEXT: encoder}, split, projections={TEXT: head} if head is not None else None)[TEXT]
    return F.normalize(z.view(len(classes), len(templates), -1).mean(dim=1), dim=1)  # prompt ensembling (CLIP)


def crossmodal_report(encoders: dict[str, Encoder], split: ArrayDataset, batch_size: int = 256,
                      run_dir: Path | None = None, projections: dict | None = None,
                      templates: list[str] | None = None) -> dict[str, float]:
    """Retrieval R@1/5/10 for every ordered modality pair, zero-shot accuracy from text prompts, and plots.

    Keys: ``retrieval/<a>_to_<b>/R@K`` (class-level, see the module docstring), ``retrieval_exact/...``
    when the pair is 1:1, ``retrieval/mean_R@1``, ``zeroshot/<m>_accuracy`` for every non-text modality
    when a text encoder and class names exist. Embeddings live in the objective's joint space when
    ``projections`` (its per-modality heads) are given, and then only the modalities it projects are
    evaluated (an encoder the objective never bound has no place in that space). ``templates``: zero-shot
    prompt templates (None: the digits prompts). Plots go to ``run_dir/plots``.
    """
    mods = [m for m in encoders if m in split.modalities]
    if projections is not None:  # only modalities the objective bound live in its joint space
        mods = [m for m in mods if m in projections]
    if len(mods) < 2:
        raise DataError(f"cross-modal evaluation needs ≥ 2 modalities with encoders (and projections, when given); "
                        f"{split.name} has {split.modalities}, encoders for {sorted(encoders)}")
    if split.labels is None:
        raise DataError(f"{split.name} has no labels; class-level retrieval needs them")
    z = embed({m: encoders[m] for m in mods}, split, batch_size, projections)
    dims = {m: z[m].shape[1] for m in mods}
    if len(set(dims.values())) != 1:
        raise DataError(f"embedding sizes differ across modalities {dims}; pass the objective's projections "
                        "so every modality lands in one joint space")
    labels = split.labels
    results = _retrieval(z, split, labels)
    if TEXT in mods and split.classes:
        head = projections[TEXT] if projections is not None and TEXT in projections else None
        class_text = class_text_embeddings(encoders[TEXT], split.classes, split.data[TEXT].shape[1], head, templates)
        for m in mods:
            if m != TEXT:
                results[f"zeroshot/{m}_accuracy"] = zeroshot_accuracy(z[m], labels, class_text)
    if run_dir is not None:
        plots = Path(run_dir) / "plots"
        similarity_heatmaps(z, labels, plots / "crossmodal_similarity.png")
        joint_embedding_plot(z, labels, plots / "crossmodal_embedding.png", split.classes)
    return results


def _retrieval(z: dict[str, torch.Tensor], split: ArrayDataset, labels: torch.Tensor) -> dict[str, float]:
    """Class-level R@K of every ordered pair of ``z``'s modalities, exact-item R@K where the pair is 1:1 (in-memory
    items all distinct), and ``retrieval/mean_R@1``."""
    results: dict[str, float] = {}
    for a, b in itertools.permutations(z, 2):
        sim = z[a] @ z[b].T
        for k, v in recall_at_k(sim, labels, labels).items():
            results[f"retrieval/{a}_to_{b}/R@{k}"] = v
        if not split.is_lazy and _unique_rows(split.data[a]) and _unique_rows(split.data[b]):  # lazy: files not in memory
            for k, v in exact_recall_at_k(sim).items():
                results[f"retrieval_exact/{a}_to_{b}/R@{k}"] = v
    results["retrieval/mean_R@1"] = float(np.mean([v for k, v in results.items()
                                                   if k.startswith("retrieval/") and k.endswith("/R@1")]))
    return results


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def similarity_heatmaps(z: dict[str, torch.Tensor], labels: torch.Tensor, path: Path, per_class: int = 10) -> Path:
    """One panel per modality pair: cosine similarity of ``per_class`` items per class, sorted by class."""
    plt = _pyplot()
    g = torch.Generator().manual_seed(0)
    idx = torch.cat([torch.nonzero(labels == c).flatten()[torch.randperm(int((labels == c).sum()), generator=g)][:per_class]
                     for c in torch.unique(labels)])
    pairs = list(itertools.combinations(z, 2))
    fig, axes = plt.subplots(1, len(pairs), figsize=(4.2 * len(pairs), 4), squeeze=False)
    for ax, (a, b) in zip(axes[0], pairs):
        im = ax.imshow((z[a][idx] @ z[b][idx].T).numpy(), cmap="viridis", vmin=-1, vmax=1)
        ax.set_title(f"{a} (rows) vs {b} (cols)", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="cosine similarity")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path


def joint_embedding_plot(z: dict[str, torch.Tensor], labels: torch.Tensor, path: Path,
                         classes: list[str] | None = None) -> Path:
    """One panel per modality on shared 2-D PCA axes of the joint space (aligned modalities look alike)."""
    from sklearn.decomposition import PCA

    plt = _pyplot()
    pca = PCA(n_components=2, random_state=0).fit(torch.cat(list(z.values())).numpy())
    fig, axes = plt.subplots(1, len(z), figsize=(4 * len(z) + 1, 4), squeeze=False, sharex=True, sharey=True)
    for ax, (m, zm) in zip(axes[0], z.items()):
        xy = pca.transform(zm.numpy())
        sc = ax.scatter(xy[:, 0], xy[:, 1], c=labels.numpy(), cmap="tab10", s=5, vmin=0, vmax=9)
        ax.set_title(f"{m} (joint space, PCA)", fontsize=9)
    names = classes or [str(c) for c in range(int(labels.max()) + 1)]
    handles = [plt.Line2D([], [], marker="o", ls="", color=sc.cmap(sc.norm(c))) for c in range(len(names))]
    fig.tight_layout(rect=(0, 0, 1 - 1 / (4 * len(z) + 1), 1))
    fig.legend(handles, names, fontsize=7, loc="center right", frameon=False, title="class", title_fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path
