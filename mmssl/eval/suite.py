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
    """Metrics keyed ``<modality>/<representation>/<metric>`` (``ssl``, ``raw``, ``random``) plus diagnostics."""
    ecfg = cfg.eval
    device = next(model.parameters()).device
    results: dict[str, float] = {}
    labelled = data.train.labels is not None and data.test.labels is not None
    for modality, encoder in model.encoders.items():
        if not labelled or modality not in data.test.modalities:
            continue
        train = extract_features(encoder, data.train, modality, int(ecfg.batch_size), device)
        test = extract_features(encoder, data.test, modality, int(ecfg.batch_size), device)
        for k, v in probe_all(train, test, float(ecfg.linear_probe_C), int(ecfg.knn_k)).items():
            results[f"{modality}/ssl/{k}"] = v
        feats = torch.from_numpy(test[0])
        results[f"{modality}/ssl/effective_rank"] = diagnostics.effective_rank(feats)
        results[f"{modality}/ssl/uniformity"] = diagnostics.uniformity(feats)
        augment = _view_augment(model, modality)
        if augment is not None:
            encoder.eval()
            # a lazy (file-backed) split may not fit in memory: the diagnostic then reads its first eval.batch_size items
            views = data.test.batch(torch.arange(min(len(data.test), int(ecfg.batch_size)))) if data.test.is_lazy \
                else data.test.all()
            x = views[modality].to(device)
            g = torch.Generator(device=device).manual_seed(0)
            results[f"{modality}/ssl/alignment"] = diagnostics.alignment(
                encoder(augment(x, generator=g)).pooled, encoder(augment(x, generator=g)).pooled)
            encoder.train()
        if baselines and not data.train.is_lazy:  # the raw-input probe holds the whole split in memory
            raw_train, raw_test = raw_features(data.train, modality), raw_features(data.test, modality)
            for k, v in probe_all(raw_train, raw_test, float(ecfg.linear_probe_C), int(ecfg.knn_k)).items():
                results[f"{modality}/raw/{k}"] = v
        if baselines:
            torch.manual_seed(int(cfg.seed))  # the same initial weights the trained encoder started from
            random_encoder = build_encoders({modality: cfg.encoder[modality]})[modality].to(device)
            r_train = extract_features(random_encoder, data.train, modality, int(ecfg.batch_size), device)
            r_test = extract_features(random_encoder, data.test, modality, int(ecfg.batch_size), device)
            for k, v in probe_all(r_train, r_test, float(ecfg.linear_probe_C), int(ecfg.knn_k)).items():
                results[f"{modality}/random/{k}"] = v
        if run_dir is not None and ecfg.plot:
            from mmssl.eval.plots import embedding_plot

            embedding_plot(test[0], test[1], Path(run_dir) / "plots" / f"embedding_{modality}.png",
                           title=f"{modality} test embeddings", class_names=data.test.classes, seed=int(cfg.seed))
    if len(model.encoders) > 1:
        results |= _crossmodal(model, data, cfg, run_dir)
    return results


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
