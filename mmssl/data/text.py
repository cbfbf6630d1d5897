"""``text_corpus``: one item per line of a text file, tokenised with open_clip's BPE tokenizer.

Lines may carry a label before a separator (``label_separator="\\t"``: ``positive<TAB>great film``);
blank lines are skipped. Returns (N, context_length) token ids.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mmssl.data.base import ArrayDataset, DatasetSplits, split_indices
from mmssl.errors import DataError
from mmssl.registry import DATASETS
from mmssl.types import TEXT


def read_lines(path: str | Path, label_separator: str | None = None) -> tuple[list[str], list[str] | None]:
    """Non-blank lines of ``path`` (UTF-8, BOM allowed) and, with ``label_separator``, the label before it on each line."""
    p = Path(path)
    try:
        lines = [ln.strip() for ln in p.read_bytes().decode("utf-8-sig").splitlines() if ln.strip()]
    except OSError as exc:
        raise DataError(f"cannot read text corpus {p}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"text corpus {p} is not UTF-8 (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}, "
                        "e.g. Latin-1); save it as UTF-8") from None
    if not lines:
        raise DataError(f"text corpus {p} has no non-blank lines")
    if label_separator is None:
        return lines, None
    texts, labels = [], []
    for number, line in enumerate(lines, 1):
        label, sep, text = line.partition(label_separator)
        if not sep or not text.strip():
            raise DataError(f"{p}: non-blank line {number} ({line[:40]!r}) has no {label_separator!r} between "
                            "label and text")
        labels.append(label.strip())
        texts.append(text.strip())
    return texts, labels


def index_lines(path: str | Path, label_separator: str | None = None) -> tuple[np.ndarray, list[str] | None]:
    """Byte offsets (N,) of the non-blank lines of ``path`` and their labels, without keeping the text."""
    p = Path(path)
    offsets, labels, sep = [], [] if label_separator is not None else None, label_separator
    try:
        with open(p, "rb") as f:
            position, number = 0, 0
            for raw in f:
                line = raw.decode("utf-8").strip()
                if line:
                    number += 1
                    if sep is not None:
                        label, found, text = line.partition(sep)
                        if not found or not text.strip():
                            raise DataError(f"{p}: non-blank line {number} ({line[:40]!r}) has no {sep!r} between "
                                            "label and text")
                        labels.append(label.strip())
                    offsets.append(position)
                position += len(raw)
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read text corpus {p}: {exc}") from None
    if not offsets:
        raise DataError(f"text corpus {p} has no non-blank lines")
    return np.asarray(offsets, dtype=np.int64), labels


@DATASETS.register("text_corpus", modalities=(TEXT,))
def text_corpus(path: str, seed: int = 0, context_length: int = 32, test_fraction: float = 0.1,
                label_separator: str | None = None, limit: int | None = None, cache: str = "memory",
                on_error: str = "stop") -> DatasetSplits:
    """Lines of a text file as BPE token ids (N, context_length), optionally labelled, split by seed.

    ``cache="memory"`` tokenises every line now; ``"none"`` keeps only each line's byte offset and
    reads and tokenises a batch's lines when it is drawn.
    """
    from mmssl.data.lazy import TextLines
    from mmssl.data.tokenize import tokenize

    meta = {}
    if cache == "none":
        offsets, names = index_lines(path, label_separator)
        if limit:
            offsets, names = offsets[:limit], names[:limit] if names else None
        column = TextLines(path, offsets, context_length, label_separator)
    else:
        texts, names = read_lines(path, label_separator)
        if limit:
            texts, names = texts[:limit], names[:limit] if names else None
        column, meta = tokenize(texts, context_length), {"texts": texts}
    classes = sorted(set(names)) if names else None
    labels = torch.tensor([classes.index(n) for n in names]) if names else None
    full = ArrayDataset({TEXT: column}, labels, classes, f"text_corpus:{path}")
    train, test = split_indices(len(full), test_fraction, seed, labels)
    return DatasetSplits(full.subset(train, f"text_corpus:{path}/train"), full.subset(test, f"text_corpus:{path}/test"),
                         meta).cached(cache, on_error)
