"""Columns of items read from files on demand, and the text columns (lines or strings).

A column stands in for an (N, ...) tensor inside ``ArrayDataset``: ``column[idx]`` decodes those
items into a (len(idx), ...) tensor and ``read(idx)`` does the same but reports unreadable items
instead of raising, so a loader can skip them. Only the index lives in memory — file paths as one
fixed-width numpy byte array (no per-item Python objects, whose reference counts would make every
DataLoader worker copy the pages: pytorch/pytorch#13246), or byte offsets into one text file. The
image and audio columns live with their readers: ``mmssl.data.images.ImageFiles``, ``mmssl.data.audio.AudioFiles``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from mmssl.errors import DataError

ON_ERROR = ("skip", "stop")


def check_on_error(on_error: str) -> str:
    if on_error not in ON_ERROR:
        raise DataError(f"data.on_error must be skip or stop, got {on_error!r}")
    return on_error


class LazyColumn:
    """(N, *item_shape) items of ``dtype`` decoded one at a time by ``decode(i)``; subclasses say how."""

    dtype: torch.dtype = torch.uint8
    item_shape: tuple[int, ...] = ()

    def __init__(self, rows: np.ndarray | None = None):
        self.rows = np.arange(self.total(), dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)

    # -- what a subclass provides -----------------------------------------------------------------
    def total(self) -> int:
        raise NotImplementedError

    def decode(self, row: int) -> torch.Tensor:
        """The item at ``row`` of the underlying source; raises ``DataError`` naming the file when unreadable."""
        raise NotImplementedError

    def with_rows(self, rows: np.ndarray) -> LazyColumn:
        clone = object.__new__(type(self))
        clone.__dict__ = dict(self.__dict__, rows=rows)
        return clone

    # -- tensor-like surface ----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self), *self.item_shape))

    def take(self, idx) -> LazyColumn:
        """The sub-column at positions ``idx`` (lazy; nothing is read)."""
        return self.with_rows(self.rows[_positions(idx)])

    def read(self, idx) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """Decode positions ``idx``: (ok items (K, *item_shape), ok mask (B,) bool, error messages)."""
        items, ok, errors = [], [], []
        for row in self.rows[_positions(idx)]:
            try:
                items.append(self.decode(int(row)))
                ok.append(True)
            except DataError as exc:
                errors.append(str(exc))
                ok.append(False)
        stacked = torch.stack(items) if items else torch.empty((0, *self.item_shape), dtype=self.dtype)
        return stacked, torch.tensor(ok, dtype=torch.bool), errors

    def __getitem__(self, idx) -> torch.Tensor:
        items, _, errors = self.read(idx)
        if errors:
            raise DataError(errors[0])
        return items


def _positions(idx) -> np.ndarray:
    if torch.is_tensor(idx):
        idx = idx.numpy()
    if isinstance(idx, slice):
        raise TypeError("index a lazy column with an index tensor or array, not a slice")
    return np.atleast_1d(np.asarray(idx, dtype=np.int64))


def path_array(paths: Sequence[str | Path]) -> np.ndarray:
    """File paths as one fixed-width byte array (UTF-8)."""
    return np.array([str(p).encode() for p in paths], dtype=np.bytes_)


class TextStrings(LazyColumn):
    """Strings (held as one UTF-8 byte array) tokenised to (context_length,) BPE ids when read."""

    dtype = torch.long

    def __init__(self, texts: Sequence[str] | np.ndarray, context_length: int):
        self.texts = texts if isinstance(texts, np.ndarray) else np.array([t.encode() for t in texts], dtype=np.bytes_)
        self.context_length = int(context_length)
        self.item_shape = (self.context_length,)
        super().__init__()

    def total(self) -> int:
        return len(self.texts)

    def strings(self, rows: np.ndarray) -> list[str]:
        return [self.texts[r].decode() for r in rows]

    def decode(self, row: int) -> torch.Tensor:
        return self.read([row])[0][0]

    def read(self, idx):
        from mmssl.data.tokenize import tokenize

        rows = self.rows[_positions(idx)]
        ids = tokenize(self.strings(rows), self.context_length)  # one batched call
        return ids, torch.ones(len(rows), dtype=torch.bool), []


class TextLines(TextStrings):
    """Lines of one UTF-8 file, found by byte offset (the index), optionally after a label separator."""

    def __init__(self, path: str | Path, offsets: np.ndarray, context_length: int, label_separator: str | None = None):
        self.path, self.offsets, self.label_separator = str(path), np.asarray(offsets, dtype=np.int64), label_separator
        self.context_length = int(context_length)
        self.item_shape = (self.context_length,)
        LazyColumn.__init__(self)

    def total(self) -> int:
        return len(self.offsets)

    def strings(self, rows: np.ndarray) -> list[str]:
        out = []
        with open(self.path, "rb") as f:
            for r in rows:
                f.seek(int(self.offsets[r]))
                line = f.readline().decode("utf-8").strip()
                out.append(line.partition(self.label_separator)[2].strip() if self.label_separator is not None else line)
        return out
