"""``manifest``: a CSV or JSONL file listing one item per row, one column per modality (plus an optional label).

``image`` and ``audio`` cells are file paths (relative to the manifest's folder or absolute), ``text``
cells are the strings themselves. Every row must have every modality column filled; a row missing
one raises ``DataError`` naming the row. Images are resized to ``image_size`` (grey or RGB by
``channels``), clips resampled to ``sample_rate`` and fitted to ``clip_seconds``, texts tokenised.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import torch

from mmssl.data.base import ArrayDataset, DatasetSplits, split_dataset, stratified_limit
from mmssl.errors import DataError
from mmssl.registry import DATASETS
from mmssl.types import AUDIO, IMAGE, TEXT

MANIFEST_MODALITIES = (IMAGE, AUDIO, TEXT)


def read_rows(path: Path) -> list[dict]:
    """Rows of a ``.csv`` (with header) or ``.jsonl`` (one object per line) manifest."""
    try:
        if path.suffix.lower() == ".csv":
            with open(path, newline="", encoding="utf-8") as f:
                return list(csv.DictReader(f))
        rows = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path} line {number} is not valid JSON ({exc.msg}); one object per line") from None
        return rows
    except OSError as exc:
        raise DataError(f"cannot read manifest {path}: {exc}") from None


@DATASETS.register("manifest", modalities=MANIFEST_MODALITIES)
def manifest(path: str, seed: int = 0, test_fraction: float = 0.2, label_column: str = "label",
             image_size: int = 32, channels: int = 1, sample_rate: int | None = None, clip_seconds: float = 1.0,
             context_length: int = 32, group_column: str | None = None, test_groups: list[str] | None = None,
             limit: int | None = None, cache: str = "memory", on_error: str = "stop") -> DatasetSplits:
    """Paired items from a CSV/JSONL manifest: columns ``image`` (path), ``audio`` (path), ``text``, ``label``.

    ``group_column`` names the column holding each row's group (speaker, writer, session) and
    ``test_groups`` the groups held out for testing; ``limit`` keeps a class-stratified random sample of
    rows fixed by ``seed``; ``sample_rate`` None reads clips at their own rate when all files share one (else 16 kHz).
    ``cache="memory"`` reads every file now; ``"none"`` keeps the rows as an index and reads each batch's
    files when it is drawn (in ``data.num_workers`` DataLoader workers).
    """
    from mmssl.data.audio import DEFAULT_SAMPLE_RATE, native_sample_rate
    from mmssl.data.lazy import AudioFiles, ImageFiles, TextStrings

    p = Path(path)
    rows = read_rows(p)
    if not rows:
        raise DataError(f"manifest {p} has no rows")
    mods = [m for m in MANIFEST_MODALITIES if any(m in r for r in rows)]
    if not mods:
        raise DataError(f"manifest {p} has none of the columns {list(MANIFEST_MODALITIES)}")
    for number, row in enumerate(rows, 1):
        absent = [m for m in mods if row.get(m) in (None, "")]
        if absent:
            raise DataError(f"manifest {p} row {number} has no {absent}; every row needs {mods} (or drop the column)")
    if group_column is not None and any(row.get(group_column) in (None, "") for row in rows):
        first = next(i for i, r in enumerate(rows, 1) if r.get(group_column) in (None, ""))
        raise DataError(f"manifest {p} row {first} has no {group_column!r} (data.group_column); fill it in every row")
    if limit:
        names = [str(r.get(label_column, "")) for r in rows]
        ids = {n: i for i, n in enumerate(sorted(set(names)))}
        rows = [rows[i] for i in stratified_limit(len(rows), torch.tensor([ids[n] for n in names]), int(limit), seed).tolist()]
    resolve = lambda cell: Path(cell) if Path(cell).is_absolute() else p.parent / cell  # noqa: E731
    data = {}
    if IMAGE in mods:
        data[IMAGE] = ImageFiles([resolve(r[IMAGE]) for r in rows], image_size, channels)
    if AUDIO in mods:
        if sample_rate is None:  # the clips' own rate when they agree, else 16 kHz
            sample_rate = native_sample_rate([resolve(r[AUDIO]) for r in rows]) or DEFAULT_SAMPLE_RATE
        data[AUDIO] = AudioFiles([resolve(r[AUDIO]) for r in rows], sample_rate, int(round(clip_seconds * sample_rate)))
    if TEXT in mods:
        data[TEXT] = TextStrings([str(r[TEXT]) for r in rows], context_length)
    labels = classes = None
    if any(r.get(label_column) not in (None, "") for r in rows):
        missing = [i for i, r in enumerate(rows, 1) if r.get(label_column) in (None, "")]
        if missing:
            raise DataError(f"manifest {p} row {missing[0]} has no {label_column!r}; label every row or none")
        names = [str(r[label_column]) for r in rows]
        classes = sorted(set(names), key=lambda n: (0, int(n), "") if n.isdigit() else (1, 0, n))
        labels = torch.tensor([classes.index(n) for n in names])
    groups = [str(r[group_column]) for r in rows] if group_column is not None else None
    full = ArrayDataset(data, labels, classes, f"manifest:{p}", groups=groups)
    meta = {"sample_rate": sample_rate} if AUDIO in mods else {}
    return DatasetSplits(*split_dataset(full, test_fraction, seed, test_groups), meta).cached(cache, on_error)
