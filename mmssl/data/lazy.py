"""Columns of items read from files on demand: images, audio clips, text lines or strings.

A column stands in for an (N, ...) tensor inside ``ArrayDataset``: ``column[idx]`` decodes those
items into a (len(idx), ...) tensor and ``read(idx)`` does the same but reports unreadable items
instead of raising, so a loader can skip them. Only the index lives in memory — file paths as one
fixed-width numpy byte array (no per-item Python objects, whose reference counts would make every
DataLoader worker copy the pages: pytorch/pytorch#13246), or byte offsets into one text file.
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


class ImageFiles(LazyColumn):
    """Image files decoded with PIL to uint8 (channels, size, size), resized with antialiasing."""

    dtype = torch.uint8

    def __init__(self, paths: Sequence[str | Path] | np.ndarray, size: int, channels: int = 3, aspect: str = "squash",
                 max_pixels: int | None = None):
        if channels not in (1, 3):
            raise DataError(f"image channels must be 1 (grey) or 3 (RGB), got {channels}")
        if aspect not in ("squash", "crop"):
            raise DataError(f"data.aspect must be one of crop, squash, got {aspect!r}")
        self.paths = paths if isinstance(paths, np.ndarray) else path_array(paths)
        self.size, self.channels, self.aspect, self.max_pixels = int(size), int(channels), aspect, max_pixels
        self.item_shape = (self.channels, self.size, self.size)
        super().__init__()

    def total(self) -> int:
        return len(self.paths)

    def decode(self, row: int) -> torch.Tensor:
        return decode_image(self.paths[row].decode(), self.size, self.channels, aspect=self.aspect,
                            max_pixels=self.max_pixels)


def decode_image(source, size: int, channels: int = 3, name: str | None = None, aspect: str = "squash",
                 max_pixels: int | None = None) -> torch.Tensor:
    """A path or file object → uint8 (channels, size, size); ``DataError`` naming the file when it is corrupt.

    ``aspect`` "squash" resizes both sides to ``size``; "crop" resizes the shorter side and centre-crops.
    Paths go through :func:`mmssl.data.images.open_image` (missing files, corrupt files and images over
    ``max_pixels`` pixels are one-line errors, checked from the header before decoding).
    """
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms.v2 import functional as TF

    mode = "L" if channels == 1 else "RGB"
    if isinstance(source, str | Path):
        from mmssl.data.images import MAX_PIXELS, open_image

        try:
            t = TF.pil_to_tensor(open_image(source, MAX_PIXELS if max_pixels is None else max_pixels, mode))
        except DataError as exc:
            raise DataError(str(exc).replace("cannot read image", "corrupt image", 1)) from None
    else:
        try:
            with Image.open(source) as img:
                img.draft(mode, (size, size))  # JPEG: decode at a reduced scale when it can
                t = TF.pil_to_tensor(img.convert(mode))
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise DataError(f"corrupt image {name or 'in a shard'}: {exc}; remove or replace the file") from None
    if aspect == "crop" and tuple(t.shape[-2:]) != (size, size):
        t = TF.center_crop(TF.resize(t, size, antialias=True), [size, size])
    elif tuple(t.shape[-2:]) != (size, size):
        t = TF.resize(t, [size, size], antialias=True)
    return t


class AudioFiles(LazyColumn):
    """Audio files read with soundfile, mixed to mono, resampled and fitted to float32 (samples,)."""

    dtype = torch.float32

    def __init__(self, paths: Sequence[str | Path] | np.ndarray, sample_rate: int, samples: int):
        self.paths = paths if isinstance(paths, np.ndarray) else path_array(paths)
        self.sample_rate, self.samples = int(sample_rate), int(samples)
        self.item_shape = (self.samples,)
        super().__init__()

    def total(self) -> int:
        return len(self.paths)

    def decode(self, row: int) -> torch.Tensor:
        from mmssl.data.audio import fit_length, read_audio

        return fit_length(read_audio(self.paths[row].decode(), self.sample_rate), self.samples)


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
