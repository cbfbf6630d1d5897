"""``manifest``: a CSV or JSONL file listing one item per row, one column per modality (plus an optional label).

``image`` and ``audio`` cells are file paths (relative to the manifest's folder or absolute), ``text``
cells are the strings themselves. Every row must have every modality column filled; a row missing
one raises ``DataError`` naming the row. Paths must stay inside the manifest's folder (``..`` or an
absolute path elsewhere is refused, naming the escape) unless ``allow_outside_root=true``: a manifest
from someone else cannot make a run read ``/etc`` or a home folder. The file is UTF-8 (a BOM is fine);
images over ``max_pixels`` pixels are refused before decoding. Images are resized to ``image_size`` (grey or RGB by
``channels``), clips resampled to ``sample_rate`` and fitted to ``clip_seconds``, texts tokenised.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import torch

from mmssl.data.audio import AUDIO_EXTENSIONS, DEFAULT_SAMPLE_RATE, AudioFiles, native_sample_rate
from mmssl.data.base import ArrayDataset, DatasetSplits, split_dataset, stratified_limit
from mmssl.data.images import MAX_PIXELS, ImageFiles
from mmssl.data.lazy import TextStrings
from mmssl.errors import DataError
from mmssl.registry import DATASETS
from mmssl.types import AUDIO, IMAGE, TEXT

MANIFEST_MODALITIES = (IMAGE, AUDIO, TEXT)


def read_rows(path: Path) -> list[dict]:
    """Rows of a ``.csv`` (with header) or ``.jsonl`` (one object per line) manifest, UTF-8 with or without BOM."""
    if path.is_dir():
        raise DataError(f"manifest {path} is a folder; pass the .csv or .jsonl file")
    try:
        text = path.read_bytes().decode("utf-8-sig")  # utf-8-sig: Excel's BOM is not part of the first column name
    except OSError as exc:
        raise DataError(f"cannot read manifest {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"manifest {path} is not UTF-8 (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}, "
                        "e.g. Latin-1); save it as UTF-8") from None
    if path.suffix.lower() == ".csv":
        try:
            return list(csv.DictReader(io.StringIO(text, newline="")))
        except csv.Error as exc:
            raise DataError(f"manifest {path} is not a valid CSV file ({exc})") from None
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path} line {number} is not valid JSON ({exc.msg}); one object per line") from None
            if not isinstance(row, dict):
                raise DataError(f"{path} line {number} is a JSON {type(row).__name__}, not an object like "
                                '{"image": "a.png", "label": 3}')
            rows.append(row)
    return rows


def _checked_rows(p: Path, group_column: str | None) -> tuple[list[dict], list[str]]:
    """(rows, modalities present) of manifest ``p``; every row has every present modality (and its group)."""
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
    for number, row in enumerate(rows, 1):
        if TEXT in mods and not isinstance(row[TEXT], str | int | float):
            raise DataError(f"manifest {p} row {number}: text must be a string, got {type(row[TEXT]).__name__}")
    return rows, mods


def _columns(p: Path, rows: list[dict], mods: list[str], image_size: int, channels: int, sample_rate: int | None,
             clip_seconds: float, context_length: int, allow_outside_root: bool,
             max_pixels: int | None) -> tuple[dict, int | None]:
    """({modality: lazy column}, the audio sample rate used): every path checked before any file is read."""
    paths = {m: [confined(p, r[m], n, m, allow_outside_root) for n, r in enumerate(rows, 1)]
             for m in (IMAGE, AUDIO) if m in mods}
    data = {}
    if IMAGE in mods:
        data[IMAGE] = ImageFiles(paths[IMAGE], image_size, channels, max_pixels=max_pixels)
    if AUDIO in mods:
        if sample_rate is None:  # the clips' own rate when they agree, else 16 kHz
            sample_rate = native_sample_rate(paths[AUDIO]) or DEFAULT_SAMPLE_RATE
        data[AUDIO] = AudioFiles(paths[AUDIO], sample_rate, int(round(clip_seconds * sample_rate)))
    if TEXT in mods:
        data[TEXT] = TextStrings([str(r[TEXT]) for r in rows], context_length)
    return data, sample_rate


def _labels(p: Path, rows: list[dict], label_column: str) -> tuple[torch.Tensor | None, list[str] | None]:
    """(labels (N,), class names) from ``label_column`` — numeric names in numeric order —, or (None, None)
    when no row has one; some rows labelled and others not is an error."""
    if not any(r.get(label_column) not in (None, "") for r in rows):
        return None, None
    missing = [i for i, r in enumerate(rows, 1) if r.get(label_column) in (None, "")]
    if missing:
        raise DataError(f"manifest {p} row {missing[0]} has no {label_column!r}; label every row or none")
    names = [str(r[label_column]) for r in rows]
    classes = sorted(set(names), key=lambda n: (0, int(n), "") if n.isdigit() else (1, 0, n))
    return torch.tensor([classes.index(n) for n in names]), classes


def confined(manifest: Path, cell, row: int, column: str, allow_outside_root: bool = False) -> Path:
    """The file a path cell names (relative to the manifest's folder), refused if it leaves that folder."""
    if not isinstance(cell, str):
        raise DataError(f"manifest {manifest} row {row}: {column} must be a path string, got "
                        f"{type(cell).__name__} {cell!r}")
    if "\x00" in cell:
        raise DataError(f"manifest {manifest} row {row}: {column} path {cell!r} contains a NUL byte")
    path = Path(cell) if Path(cell).is_absolute() else manifest.parent / cell
    if not allow_outside_root:
        root, target = manifest.parent.resolve(), path.resolve()  # resolve: symlinks and .. count as escapes
        if not target.is_relative_to(root):
            raise DataError(f"manifest {manifest} row {row}: {column} path {cell!r} resolves to {target}, outside the "
                            f"manifest's folder {root}; move the file under it or set data.allow_outside_root=true")
    return path


def folder_sample_rate(root: str, fallback: int = 16000) -> int:
    """Config resolver ``${native_sample_rate:${oc.select:data.root,null},16000}``: the files' common rate, else ``fallback``.

    A folder or manifest that cannot be read yet falls back quietly; the loader reports the real problem.
    """
    if root is None:
        return int(fallback)
    p = Path(str(root))
    try:
        if p.is_dir():
            paths = [q for q in p.rglob("*") if q.suffix.lower() in AUDIO_EXTENSIONS]
        elif p.is_file():
            paths = [q if q.is_absolute() else p.parent / q for q in (Path(r["audio"]) for r in read_rows(p) if r.get("audio"))]
        else:
            return int(fallback)
        rate = native_sample_rate(paths)
    except (DataError, OSError, KeyError):
        return int(fallback)
    return int(rate) if rate else int(fallback)


@DATASETS.register("manifest", modalities=MANIFEST_MODALITIES)
def manifest(path: str, seed: int = 0, test_fraction: float = 0.2, label_column: str = "label",
             image_size: int = 32, channels: int = 1, sample_rate: int | None = None, clip_seconds: float = 1.0,
             context_length: int = 32, group_column: str | None = None, test_groups: list[str] | None = None,
             limit: int | None = None, cache: str = "memory", on_error: str = "stop",
             allow_outside_root: bool = False, max_pixels: int | None = MAX_PIXELS) -> DatasetSplits:
    """Paired items from a CSV/JSONL manifest: columns ``image`` (path), ``audio`` (path), ``text``, ``label``.

    ``group_column`` names the column holding each row's group (speaker, writer, session) and
    ``test_groups`` the groups held out for testing; ``limit`` keeps a class-stratified random sample of
    rows fixed by ``seed``; ``sample_rate`` None reads clips at their own rate when all files share one (else 16 kHz).
    Paths must stay inside the manifest's folder unless ``allow_outside_root``; images over ``max_pixels``
    pixels are refused before decoding. ``cache="memory"`` reads every file now; ``"none"`` keeps the rows as an index and reads each batch's
    files when it is drawn (in ``data.num_workers`` DataLoader workers).
    """
    p = Path(path)
    rows, mods = _checked_rows(p, group_column)
    if limit:
        names = [str(r.get(label_column, "")) for r in rows]
        ids = {n: i for i, n in enumerate(sorted(set(names)))}
        rows = [rows[i] for i in stratified_limit(len(rows), torch.tensor([ids[n] for n in names]), int(limit), seed).tolist()]
    data, sample_rate = _columns(p, rows, mods, image_size, channels, sample_rate, clip_seconds, context_length,
                                 allow_outside_root, max_pixels)
    labels, classes = _labels(p, rows, label_column)
    groups = [str(r[group_column]) for r in rows] if group_column is not None else None
    full = ArrayDataset(data, labels, classes, f"manifest:{p}", groups=groups)
    meta = {"sample_rate": sample_rate} if AUDIO in mods else {}
    return DatasetSplits(*split_dataset(full, test_fraction, seed, test_groups), meta).cached(cache, on_error)
