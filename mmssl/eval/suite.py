"""The evaluation suite of a pretrained model (what `mmssl pretrain` and `mmssl eval` report): linear and kNN
probes per labelled modality, diagnostics, raw-input and random-init baselines, embedding plots, cross-modal.

Not to be confused with ``mmssl.report`` (the `mmssl report` command: tables and plots across run folders).
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig

from mmssl.build import SSLModel, build_encoders
from mmssl.data.base import DatasetSplits
from mmssl.eval import diagnostics
from mmssl.eval.probes import extract_features, probe_all, raw_features


def _view_augment(model: SSLModel, modality: str):
    """The first objective's augmentation for ``modality`` (used for the alignment diagnostic)."""
    for objective in model.objectives.values():
        if getattr(objective, "modality", None) == modality and hasattr(objective, "augment"):
            return objective.augment
    return None


@torch.no_grad()
def evaluate(model: SSLModel, data: DatasetSplits, cfg: DictConfig, baselines: bool = True,
             run_dir: Path | None = None) -> dict[str, float]:
    """Metrics keyed ``<modality>/<representation>/<metric>`` (``ssl``, ``raw``, ``random``) plus diagnostics.

    Per labelled modality: probes and diagnostics of the trained encoder, then (with ``baselines``) the same
    probes on the raw input and on a random-init encoder, then the embedding plot; then cross-modal metrics.
    """
    results: dict[str, float] = {}
    labelled = data.train.labels is not None and data.test.labels is not None
    for modality, encoder in model.encoders.items():
        if not labelled or modality not in data.test.modalities:
            continue
        test_features = _trained_encoder(results, model, encoder, data, cfg, modality)
        if baselines:
            _baselines(results, data, cfg, modality, next(model.parameters()).device)
        if run_dir is not None and cfg.eval.plot:
            from mmssl.eval.plots import embedding_plot

            embedding_plot(test_features[0], test_features[1], Path(run_dir) / "plots" / f"embedding_{modality}.png",
                           title=f"{modality} test embeddings", class_names=data.test.classes, seed=int(cfg.seed))
    if len(model.encoders) > 1:
        results |= _crossmodal(model, data, cfg, run_dir)
    return results


def _probe(results: dict[str, float], prefix: str, train, test, ecfg: DictConfig) -> None:
    """Linear-probe and kNN accuracies of (features, labels) pairs, stored under ``<prefix>/<metric>``."""
    for k, v in probe_all(train, test, float(ecfg.linear_probe_C), int(ecfg.knn_k)).items():
        results[f"{prefix}/{k}"] = v


def _trained_encoder(results: dict[str, float], model: SSLModel, encoder, data: DatasetSplits, cfg: DictConfig,
                     modality: str):
    """Probes, effective rank, uniformity and (when an objective augments ``modality``) alignment of the
    trained encoder, under ``<modality>/ssl/``; returns its test (features, labels) for the plot."""
    ecfg, device = cfg.eval, next(model.parameters()).device
    train = extract_features(encoder, data.train, modality, int(ecfg.batch_size), device)
    test = extract_features(encoder, data.test, modality, int(ecfg.batch_size), device)
    _probe(results, f"{modality}/ssl", train, test, ecfg)
    feats = torch.from_numpy(test[0])
    results[f"{modality}/ssl/effective_rank"] = diagnostics.effective_rank(feats)
    results[f"{modality}/ssl/uniformity"] = diagnostics.uniformity(feats)
    augment = _view_augment(model, modality)
    if augment is not None:
        results[f"{modality}/ssl/alignment"] = _alignment(encoder, augment, data, modality, int(ecfg.batch_size),
                                                          device)
    return test


def _alignment(encoder, augment, data: DatasetSplits, modality: str, batch_size: int, device) -> float:
    """Alignment of two augmented views of the test split (one seeded generator, so the result repeats)."""
    encoder.eval()
    # a lazy (file-backed) split may not fit in memory: the diagnostic then reads its first eval.batch_size items
    views = data.test.batch(torch.arange(min(len(data.test), batch_size))) if data.test.is_lazy else data.test.all()
    x = views[modality].to(device)
    g = torch.Generator(device=device).manual_seed(0)
    value = diagnostics.alignment(encoder(augment(x, generator=g)).pooled, encoder(augment(x, generator=g)).pooled)
    encoder.train()
    return value


def _baselines(results: dict[str, float], data: DatasetSplits, cfg: DictConfig, modality: str,
               device: torch.device) -> None:
    """The same probes on the raw input (``<modality>/raw/``, in-memory splits only) and on a random-init
    encoder of the same architecture and seed (``<modality>/random/``)."""
    ecfg = cfg.eval
    if not data.train.is_lazy:  # the raw-input probe holds the whole split in memory
        _probe(results, f"{modality}/raw", raw_features(data.train, modality), raw_features(data.test, modality), ecfg)
    torch.manual_seed(int(cfg.seed))  # the same initial weights the trained encoder started from
    random_encoder = build_encoders({modality: cfg.encoder[modality]})[modality].to(device)
    _probe(results, f"{modality}/random",
           extract_features(random_encoder, data.train, modality, int(ecfg.batch_size), device),
           extract_features(random_encoder, data.test, modality, int(ecfg.batch_size), device), ecfg)


def _crossmodal(model: SSLModel, data: DatasetSplits, cfg: DictConfig, run_dir: Path | None) -> dict[str, float]:
    try:
        from mmssl.eval.crossmodal import crossmodal_report
    except ImportError:
        return {}
    projections = None
    for objective in model.objectives.values():
        if hasattr(objective, "projections"):
            projections = objective.projections
            break
    encoders = {m: e for m, e in model.encoders.items() if m in data.test.modalities}
    if len(encoders) < 2:
        return {}
    return crossmodal_report(encoders, data.test, int(cfg.eval.batch_size), run_dir, projections,
                             list(cfg.eval.get("templates") or []) or None)


def probe_table(results: dict[str, float]) -> str:
    """A markdown table: one row per (modality, representation), probe accuracies as columns."""
    names = {"raw": "raw input", "random": "random-init encoder", "ssl": "self-supervised encoder"}
    rows = ["| modality | representation | linear probe | kNN |", "|---|---|---:|---:|"]
    modalities = sorted({k.split("/")[0] for k in results if k.count("/") == 2})
    for m in modalities:
        for rep in ("raw", "random", "ssl"):
            lp, kn = results.get(f"{m}/{rep}/linear_probe_accuracy"), results.get(f"{m}/{rep}/knn_accuracy")
            if lp is None:
                continue
            rows.append(f"| {m} | {names[rep]} | {lp:.4f} | {kn:.4f} |")
    return "\n".join(rows)
