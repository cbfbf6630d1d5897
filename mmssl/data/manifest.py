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

import numpy as np
import torch

from mmssl.data.base import ArrayDataset, DatasetSplits, split_indices
from mmssl.data.images import MAX_PIXELS, open_image
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


def _load_image(path: Path, size: int, channels: int, max_pixels: int | None = MAX_PIXELS) -> torch.Tensor:
    from PIL import Image

    img = open_image(path, max_pixels, "L" if channels == 1 else "RGB")
    arr = np.asarray(img.resize((size, size), Image.BILINEAR), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).reshape(size, size, channels).permute(2, 0, 1)


@DATASETS.register("manifest", modalities=MANIFEST_MODALITIES)
def manifest(path: str, seed: int = 0, test_fraction: float = 0.2, label_column: str = "label",
             image_size: int = 32, channels: int = 1, sample_rate: int = 16000, clip_seconds: float = 1.0,
             context_length: int = 32, allow_outside_root: bool = False,
             max_pixels: int | None = MAX_PIXELS) -> DatasetSplits:
    """Paired items from a CSV/JSONL manifest: columns ``image`` (path), ``audio`` (path), ``text``, ``label``."""
    from mmssl.data.audio import read_audio
    from mmssl.data.trimodal import fit_length
    from mmssl.encoders.text import tokenize

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
    paths = {m: [confined(p, r[m], n, m, allow_outside_root) for n, r in enumerate(rows, 1)]
             for m in (IMAGE, AUDIO) if m in mods}  # every path checked before any file is read
    for number, row in enumerate(rows, 1):
        if TEXT in mods and not isinstance(row[TEXT], str | int | float):
            raise DataError(f"manifest {p} row {number}: text must be a string, got {type(row[TEXT]).__name__}")
    data = {}
    if IMAGE in mods:
        data[IMAGE] = torch.stack([_load_image(f, image_size, channels, max_pixels) for f in paths[IMAGE]])
    if AUDIO in mods:
        samples = int(round(clip_seconds * sample_rate))
        data[AUDIO] = torch.stack([fit_length(read_audio(f, sample_rate), samples) for f in paths[AUDIO]])
    if TEXT in mods:
        data[TEXT] = tokenize([str(r[TEXT]) for r in rows], context_length)
    labels = classes = None
    if any(r.get(label_column) not in (None, "") for r in rows):
        missing = [i for i, r in enumerate(rows, 1) if r.get(label_column) in (None, "")]
        if missing:
            raise DataError(f"manifest {p} row {missing[0]} has no {label_column!r}; label every row or none")
        names = [str(r[label_column]) for r in rows]
        classes = sorted(set(names), key=lambda n: (0, int(n), "") if n.isdigit() else (1, 0, n))
        labels = torch.tensor([classes.index(n) for n in names])
    full = ArrayDataset(data, labels, classes, f"manifest:{p}")
    train, test = split_indices(len(full), test_fraction, seed, labels)
    return DatasetSplits(full.subset(train, f"manifest:{p}/train"), full.subset(test, f"manifest:{p}/test"))
