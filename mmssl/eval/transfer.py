"""`mmssl eval RUN data=… [data.*=… eval.*=…]`: a run's frozen encoders on another dataset.

The overrides are Hydra overrides onto the run's stored config: ``data=<option>`` composes that data
group from ``configs/data`` (with any ``data.*`` keys) through ``mmssl.config.compose``; ``data.*``
alone edits the run's own data node (e.g. ``data.test_groups=[s3]``); ``eval.*`` sets evaluation
keys. Keys that say how items are read (audio ``sample_rate``/``clip_seconds``, text
``context_length``, image ``channels``/``size``) follow the run's encoders unless given.

Per modality the run has an encoder for: linear probe and kNN accuracy, k-means (k = number of
classes) NMI and ARI against the labels — or, with ``eval.task=regression`` (labels read as numbers),
a ridge probe's R² (regularisation chosen by leave-one-out CV) and kNN-regression R²; with
``eval.baselines`` the same for raw inputs and a random-init encoder. Cross-modal runs add zero-shot
accuracy from class-name prompts (``eval.templates``, averaged as in CLIP), retrieval R@1/5/10 for
every ordered pair of modalities the data has, and the similarity heatmap. Everything is written to
``RUN/eval/<name>/`` (results.json, results.md, plots/); nothing else in the run folder is touched.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from mmssl.config import compose
from mmssl.data.adapt import adapt_dataset
from mmssl.data.base import ArrayDataset, DatasetSplits
from mmssl.errors import ConfigError, DataError
from mmssl.eval.probes import extract_features, knn_accuracy, linear_probe_accuracy, raw_features
from mmssl.inference import LoadedRun, load_run
from mmssl.types import AUDIO, IMAGE, TEXT

TASKS = ("classification", "regression")
#: data keys that say how items are read, and where the run's encoders fix their value
READ_KEYS = {AUDIO: {"sample_rate": "sample_rate", "clip_seconds": "clip_seconds"},
             TEXT: {"context_length": "context_length"},
             IMAGE: {"channels": "channels", "size": "size", "image_size": "size"}}


# -- config ------------------------------------------------------------------------------------------
def eval_config(run_config: Mapping, overrides: list[str], inputs: Mapping[str, Mapping] | None = None) -> DictConfig:
    """The run's config with its ``data`` and ``eval`` nodes replaced/edited by ``overrides`` (see module doc)."""
    parsed = _parse_eval_overrides(overrides)
    swap = any(o.key_or_group == "data" for o in parsed)
    composable = [t for o, t in zip(parsed, overrides) if swap or o.key_or_group.startswith("eval")]
    composed = compose("pretrain", composable)
    cfg = OmegaConf.create(dict(run_config))
    cfg.setdefault("seed", 0)
    given = {o.key_or_group for o in parsed}
    # eval: today's defaults (keys older runs lack), then the run's values, then the overrides
    ev = OmegaConf.merge(compose("pretrain").eval, cfg.get("eval") or {})
    for key in given:
        if key.startswith("eval."):
            OmegaConf.update(ev, key[len("eval."):], OmegaConf.select(composed, key), merge=False)
    cfg.eval = ev
    if swap:
        data = composed.data
        for modality, keys in READ_KEYS.items():  # read new items the way the run's encoders were trained
            for key, source in keys.items():
                if modality in (inputs or {}) and key in data and f"data.{key}" not in given:
                    data[key] = (inputs or {})[modality][source]
    else:
        data = _edited_data(OmegaConf.create(OmegaConf.to_container(cfg.get("data") or {}, resolve=True)), parsed)
    cfg.data = data
    if cfg.eval.get("task", "classification") not in TASKS:
        raise ConfigError(f"eval.task must be one of {', '.join(TASKS)}, got {cfg.eval.task!r}")
    return cfg


def _parse_eval_overrides(overrides: list[str]) -> list:
    """Hydra's parsed ``overrides`` (``Override`` objects), each a ``data`` or ``eval`` key, or a one-line error."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser, parsed = OverridesParser.create(), []
    for text in overrides:
        try:
            parsed += parser.parse_overrides([text])
        except HydraException:
            raise ConfigError(f"cannot parse override {text!r}; write key=value (Hydra syntax: quote values with "
                              "special characters, e.g. data.group_pattern='^(\\w+)_')") from None
    for o, text in zip(parsed, overrides):
        if o.key_or_group.split(".")[0] not in ("data", "eval"):
            raise ConfigError(f"mmssl eval takes data and eval overrides (e.g. data=image_folder data.root=DIR "
                              f"eval.task=regression), got {text!r}")
    return parsed


def _edited_data(data: DictConfig, parsed: list) -> DictConfig:
    """The run's own ``data`` node with the ``data.<key>=…`` overrides applied: each key must exist (``+data.key``
    adds one) and keep the type of the run's value."""
    for o in parsed:
        if not o.key_or_group.startswith("data."):
            continue
        key = o.key_or_group[len("data."):]
        current = OmegaConf.select(data, key, default="__missing__")
        if current == "__missing__" and not o.is_add():
            close = difflib.get_close_matches(key, list(data), n=3, cutoff=0.6)
            hint = f"did you mean {', '.join('data.' + c for c in close)}? " if close else ""
            raise ConfigError(f"the run's data ({data.get('name')!r}) has no key {key!r}; {hint}(use +data.{key}=… "
                              "to add it, or data=<option> for another dataset)")
        value = o.value()
        if isinstance(current, bool | int | float) and not isinstance(value, type(current)) and not (
                isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool)):
            raise ConfigError(f"bad override data.{key}={value!r}: must be {type(current).__name__} (run value {current!r})")
        OmegaConf.update(data, key, value, merge=False)
    return data


def result_name(cfg: DictConfig) -> str:
    """``eval.name``, or the data's name plus the folder/file it reads (``image_folder-my_digits``)."""
    if cfg.eval.get("name"):
        name = str(cfg.eval.name)
    else:
        source = cfg.data.get("root") or cfg.data.get("path")
        name = str(cfg.data.name) + (f"-{Path(str(source)).stem}" if source else "")
    return re.sub(r"[^\w.-]+", "_", name)


# -- metrics -----------------------------------------------------------------------------------------
def kmeans_scores(features: np.ndarray, labels: np.ndarray, seed: int = 0) -> dict[str, float]:
    """k-means (k = number of classes, 10 restarts) on L2-normalised features (N, D): NMI and ARI vs labels."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    k = len(np.unique(labels))
    if k < 2 or len(features) < k:
        return {}
    x = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    clusters = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(x)
    return {"kmeans_nmi": float(normalized_mutual_info_score(labels, clusters)),
            "kmeans_ari": float(adjusted_rand_score(labels, clusters))}


def ridge_r2(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> float:
    """Test R² of ridge regression on standardised features, α chosen from 1e-3…1e4 by leave-one-out CV."""
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 4, 15)))
    return float(model.fit(train_x, train_y).score(test_x, test_y))


def knn_r2(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, k: int = 20) -> float:
    """Test R² of distance-weighted cosine kNN regression."""
    from sklearn.neighbors import KNeighborsRegressor

    knn = KNeighborsRegressor(n_neighbors=min(k, len(train_x)), metric="cosine", weights="distance")
    return float(knn.fit(train_x, train_y).score(test_x, test_y))


def numeric_targets(split: ArrayDataset) -> np.ndarray:
    """Regression targets: each item's class name read as a number (``"3.5"`` → 3.5)."""
    try:
        values = np.array([float(c) for c in split.classes], dtype=np.float64)
    except (TypeError, ValueError):
        shown = ", ".join(map(str, (split.classes or [])[:5]))
        raise DataError(f"eval.task=regression reads the labels as numbers, but {split.name} has labels {shown}…; "
                        "use numeric labels or eval.task=classification") from None
    return values[split.labels.numpy()]


def feature_metrics(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], task: str,
                    targets: tuple[np.ndarray, np.ndarray] | None, ecfg: Mapping, seed: int) -> dict[str, float]:
    """Probe metrics of one representation: classification (probe, kNN, k-means) or regression (ridge, kNN R²)."""
    if task == "regression":
        return {"ridge_r2": ridge_r2(train[0], targets[0], test[0], targets[1]),
                "knn_r2": knn_r2(train[0], targets[0], test[0], targets[1], int(ecfg.get("knn_k", 20)))}
    out = {"linear_probe_accuracy": linear_probe_accuracy(*train, *test, C=float(ecfg.get("linear_probe_C", 1.0))),
           "knn_accuracy": knn_accuracy(*train, *test, k=int(ecfg.get("knn_k", 20)))}
    if ecfg.get("kmeans", True):
        out |= kmeans_scores(test[0], test[1], seed)
    return out


# -- the evaluation ----------------------------------------------------------------------------------
def _adapt(data: DatasetSplits, run: LoadedRun, modalities: list[str]) -> DatasetSplits:
    """The data's items reshaped to what the encoders read (image channels and size), else a clear error."""
    shapes = {}
    if IMAGE in modalities and IMAGE in run.inputs:
        shapes[IMAGE] = (run.inputs[IMAGE]["channels"], run.inputs[IMAGE]["size"], run.inputs[IMAGE]["size"])
    if AUDIO in modalities and AUDIO in run.inputs:
        shapes[AUDIO] = (int(round(run.inputs[AUDIO]["clip_seconds"] * run.inputs[AUDIO]["sample_rate"])),)
    train, test = data.train, data.test
    for m, shape in shapes.items():
        if m == IMAGE and getattr(run.encoders[m], "image_size", None):  # open_clip towers resize themselves
            shape = (shape[0],) + tuple(train.data[m].shape[2:])
        train, test = adapt_dataset(train, m, shape), adapt_dataset(test, m, shape)
    return DatasetSplits(train, test, data.meta)


def evaluate_on(run: LoadedRun, cfg: DictConfig, out_dir: Path | None = None) -> dict[str, float]:
    """Metrics of ``run``'s frozen encoders on ``cfg.data`` (see the module docstring); plots under ``out_dir``."""
    from mmssl.build import build_data, build_encoders

    ecfg, task, seed = cfg.eval, str(cfg.eval.get("task", "classification")), int(cfg.get("seed", 0))
    data = build_data(cfg)
    name = cfg.data.get("name")
    mods = [m for m in run.encoders if m in data.test.modalities]
    if not mods:
        raise ConfigError(f"data {name!r} has {data.test.modalities} but the run has encoders for {sorted(run.encoders)} "
                          f"only; evaluate on data of one of those modalities (e.g. a data= option with "
                          f"{' or '.join(sorted(run.encoders))})")
    if data.train.labels is None or data.test.labels is None:
        raise DataError(f"data {name!r} has no labels; probes, clustering and zero-shot need labelled items "
                        "(a label column, class folders or label_separator)")
    data = _adapt(data, run, mods)
    device = next(run.encoders.parameters()).device
    batch_size = int(ecfg.get("batch_size", 512))
    targets = (numeric_targets(data.train), numeric_targets(data.test)) if task == "regression" else None
    results: dict[str, float] = {}
    for m in mods:
        train = extract_features(run.encoders[m], data.train, m, batch_size, device)
        test = extract_features(run.encoders[m], data.test, m, batch_size, device)
        reps = {"ssl": (train, test)}
        if ecfg.get("baselines"):
            reps["raw"] = (raw_features(data.train, m), raw_features(data.test, m))
            if m in (cfg.get("encoder") or {}):
                torch.manual_seed(seed)  # the initial weights the trained encoder started from
                random_encoder = build_encoders({m: cfg.encoder[m]})[m].to(device)
                reps["random"] = (extract_features(random_encoder, data.train, m, batch_size, device),
                                  extract_features(random_encoder, data.test, m, batch_size, device))
        for rep, (tr, te) in reps.items():
            for k, v in feature_metrics(tr, te, task, targets, ecfg, seed).items():
                results[f"{m}/{rep}/{k}"] = v
    results |= _crossmodal(run, data, mods, cfg, out_dir)
    return results


def _crossmodal(run: LoadedRun, data: DatasetSplits, mods: list[str], cfg: DictConfig, out_dir: Path | None) -> dict:
    """Retrieval across every pair of the data's modalities in the joint space, zero-shot from class prompts, heatmap."""
    from mmssl.eval.crossmodal import crossmodal_report, embed, similarity_heatmaps, zeroshot_accuracy

    ecfg = cfg.eval
    wanted = ecfg.get("zeroshot")  # null: wherever possible; true: required (a one-line error when impossible)
    joint = [m for m in mods if m in run.heads]
    can_zeroshot = TEXT in run.heads and bool(data.test.classes) and any(m != TEXT for m in joint)
    if wanted and not can_zeroshot:
        why = ("the run has no joint-space heads (it was trained without a cross-modal objective, or exported "
               "without heads — re-export it with `mmssl export RUN --out DIR`)" if run.joint is None else
               f"it needs a text head (heads: {run.joint.modalities}), class names in the data and a non-text modality "
               f"with a head among the data's {data.test.modalities}")
        raise ConfigError(f"eval.zeroshot=true but zero-shot is impossible for {run.source}: {why}")
    if run.joint is None or wanted is False or (wanted is None and ecfg.get("task") == "regression" and len(joint) < 2):
        return {}
    templates = list(ecfg.get("templates") or []) or None
    results: dict[str, float] = {}
    if len(joint) >= 2:
        results |= crossmodal_report({m: run.encoders[m] for m in joint}, data.test, int(ecfg.get("batch_size", 512)),
                                     out_dir, run.heads, templates=templates)
    if can_zeroshot and not any(k.startswith("zeroshot/") for k in results):
        class_text = run.class_embeddings(data.test.classes, templates)
        z = embed({m: run.encoders[m] for m in joint if m != TEXT}, data.test, projections=run.heads)
        for m, zm in z.items():
            results[f"zeroshot/{m}_accuracy"] = zeroshot_accuracy(zm, data.test.labels, class_text)
        if out_dir is not None:  # one modality: its items against the class prompts
            z["class prompts"] = class_text[data.test.labels]
            similarity_heatmaps(z, data.test.labels, Path(out_dir) / "plots" / "crossmodal_similarity.png")
    return results


def results_table(results: Mapping[str, float], task: str) -> str:
    """Markdown: one row per (modality, representation); then cross-modal metrics, one per row."""
    names = {"raw": "raw input", "random": "random-init encoder", "ssl": "self-supervised encoder"}
    cols = ([("ridge_r2", "ridge R²"), ("knn_r2", "kNN R²")] if task == "regression" else
            [("linear_probe_accuracy", "linear probe"), ("knn_accuracy", "kNN"), ("kmeans_nmi", "k-means NMI"),
             ("kmeans_ari", "k-means ARI")])
    rows = ["| modality | representation | " + " | ".join(c for _, c in cols) + " |",
            "|---|---|" + "---:|" * len(cols)]
    for m in sorted({k.split("/")[0] for k in results if k.count("/") == 2 and k.split("/")[1] in names}):
        for rep in ("raw", "random", "ssl"):
            values = [results.get(f"{m}/{rep}/{k}") for k, _ in cols]
            if all(v is None for v in values):
                continue
            rows.append(f"| {m} | {names[rep]} | " + " | ".join("–" if v is None else f"{v:.4f}" for v in values) + " |")
    other = sorted(k for k in results if k.startswith(("retrieval", "zeroshot")))
    if other:
        rows += ["", "| cross-modal metric | value |", "|---|---:|"] + [f"| {k} | {results[k]:.4f} |" for k in other]
    return "\n".join(rows)


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)  # atomic: a reader never sees half a file


def run(target: str | Path, overrides: list[str] | tuple[str, ...]) -> tuple[dict[str, float], Path]:
    """``mmssl eval target overrides…`` as a function: (results, the folder they were written to)."""
    loaded = load_run(target)
    cfg = eval_config(OmegaConf.to_container(loaded.config, resolve=True), list(overrides), loaded.inputs)
    base = loaded.run_dir if loaded.run_dir is not None else Path(loaded.source)
    out_dir = Path(base) / "eval" / result_name(cfg)
    results = evaluate_on(loaded, cfg, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    task = str(cfg.eval.get("task", "classification"))
    record = {"checkpoint": str(loaded.source), "step": loaded.step, "data": OmegaConf.to_container(cfg.data),
              "eval": OmegaConf.to_container(cfg.eval), "results": results}
    _write(out_dir / "results.json", json.dumps(record, indent=2) + "\n")
    _write(out_dir / "results.md", results_table(results, task) + "\n")
    return results, out_dir

