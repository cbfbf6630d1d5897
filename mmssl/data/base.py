"""Datasets of raw tensors — in memory or read lazily from files — and a seeded, resumable batch iterator.

Built-in datasets are small enough to hold as tensors (images as uint8), so their batches are made by
indexing — no per-sample Python or PIL work in the training hot path. File datasets (folders,
manifests, corpora) can instead hold lazy columns (``mmssl.data.lazy``) that decode a batch's files
when it is drawn, in DataLoader workers (``mmssl.data.loader``). Batch order depends only on
``(seed, epoch)``, so a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from mmssl.data.lazy import LazyColumn, check_on_error
from mmssl.errors import DataError
from mmssl.types import Batch

#: one modality's items: a tensor in memory, or a column of files decoded when a batch is drawn
Column = torch.Tensor | LazyColumn


class ArrayDataset:
    """Tensors keyed by modality, all with the same first dimension, plus optional integer labels.

    Images are stored as (N, C, H, W) uint8 or float; ``batch(idx)`` returns floats in [0, 1]. A column
    may be a ``LazyColumn`` instead of a tensor: then only the index is in memory and ``batch(idx)``
    reads those files (``materialize()`` reads them all once: ``data.cache=memory``).
    """

    def __init__(self, data: Mapping[str, Column], labels: torch.Tensor | None = None,
                 classes: list[str] | None = None, name: str = "dataset", extra: Mapping[str, Any] | None = None,
                 groups: list[str] | None = None) -> None:
        if not data:
            raise DataError(f"{name}: no modalities given")
        sizes = {k: len(v) for k, v in data.items()}
        if labels is not None:
            sizes["labels"] = len(labels)
        if groups is not None:
            sizes["groups"] = len(groups)
        if len(set(sizes.values())) != 1:
            raise DataError(f"{name}: modalities have different lengths {sizes}; every item needs all of them")
        if next(iter(sizes.values())) == 0:
            raise DataError(f"{name} is empty: no items to train or evaluate on; check the data path or filters")
        self.data = dict(data)
        self.labels = labels
        self.classes = classes
        self.name = name
        self.extra = dict(extra or {})
        #: per-item group names (speaker, writer, session) where the loader knows them, else None
        self.groups = None if groups is None else list(groups)
        self.on_error = "stop"  # what batch() does with an unreadable file of a lazy column

    def __len__(self) -> int:
        return len(next(iter(self.data.values())))

    @property
    def modalities(self) -> list[str]:
        return list(self.data)

    @property
    def is_lazy(self) -> bool:
        """True when some column is read from files on demand."""
        return any(isinstance(v, LazyColumn) for v in self.data.values())

    def batch(self, idx: torch.Tensor) -> Batch:
        """Items ``idx`` as a Batch (floats in [0, 1] for uint8 columns).

        An unreadable file raises ``DataError``, or with ``on_error="skip"`` (set by ``DatasetSplits.cached``)
        becomes an all-zero item, so evaluation keeps every label aligned with its features.
        """
        data = {k: _as_float(self._column(v, idx)) for k, v in self.data.items()}
        labels = None if self.labels is None else self.labels[idx]
        return Batch(data, labels)

    def _column(self, v: Column, idx: torch.Tensor) -> torch.Tensor:
        if not isinstance(v, LazyColumn) or self.on_error == "stop":
            return v[idx]
        items, good, errors = v.read(idx)
        for message in errors:
            warnings.warn(f"{message} (evaluated as an all-zero item)", stacklevel=3)
        full = torch.zeros((len(good), *v.item_shape), dtype=v.dtype)
        full[good] = items
        return full

    def fetch(self, idx: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor | None, list[str], torch.Tensor]:
        """Like ``batch`` but unreadable items are dropped and reported: (data, labels, error messages, kept indices).

        Runs in DataLoader workers; returns plain tensors and lists so they pickle and pin cheaply.
        """
        idx = torch.as_tensor(idx)
        if not self.is_lazy:
            batch = self.batch(idx)
            return batch.data, batch.labels, [], idx
        ok = torch.ones(len(idx), dtype=torch.bool)
        raw: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
        errors: list[str] = []
        for k, v in self.data.items():
            if isinstance(v, LazyColumn):
                items, good, bad = v.read(idx)
                raw[k], errors = (items, good), errors + bad
                ok &= good
            else:
                raw[k] = (v[idx], None)
        data = {}
        for k, (rows, rows_ok) in raw.items():
            if not ok.all():  # a lazy column's items hold only its own good rows
                rows = rows[ok[rows_ok]] if rows_ok is not None else rows[ok]
            data[k] = _as_float(rows)
        labels = None if self.labels is None else self.labels[idx][ok]
        return data, labels, errors, idx[ok]

    def subset(self, idx: torch.Tensor, name: str | None = None) -> ArrayDataset:
        part = ArrayDataset({k: v.take(idx) if isinstance(v, LazyColumn) else v[idx] for k, v in self.data.items()},
                            None if self.labels is None else self.labels[idx], self.classes, name or self.name,
                            self.extra, None if self.groups is None else [self.groups[i] for i in idx.tolist()])
        part.on_error = self.on_error
        return part

    def materialize(self, on_error: str = "stop", chunk: int = 256) -> tuple[ArrayDataset, list[str]]:
        """Every lazy column read into memory (raw dtype kept): (in-memory dataset, errors of skipped items).

        ``on_error="stop"`` raises ``DataError`` naming the first unreadable file; ``"skip"`` drops it.
        """
        if not self.is_lazy:
            return self, []
        check_on_error(on_error)
        parts: dict[str, list[torch.Tensor]] = {k: [] for k in self.data}
        keep: list[torch.Tensor] = []
        errors: list[str] = []
        for start in range(0, len(self), chunk):
            idx = torch.arange(start, min(start + chunk, len(self)))
            ok = torch.ones(len(idx), dtype=torch.bool)
            read: dict[str, torch.Tensor] = {}
            for k, v in self.data.items():
                if isinstance(v, LazyColumn):
                    items, good, bad = v.read(idx)
                    if bad and on_error == "stop":
                        raise DataError(bad[0])
                    full = torch.zeros((len(idx), *v.item_shape), dtype=v.dtype)
                    full[good] = items
                    read[k], errors, ok = full, errors + bad, ok & good
                else:
                    read[k] = v[idx]
            for k in self.data:
                parts[k].append(read[k][ok])
            keep.append(idx[ok])
        kept = torch.cat(keep)
        data = {k: torch.cat(v) for k, v in parts.items()}
        labels = None if self.labels is None else self.labels[kept]
        groups = None if self.groups is None else [self.groups[i] for i in kept.tolist()]
        return ArrayDataset(data, labels, self.classes, self.name, self.extra, groups), errors

    def all(self) -> Batch:
        return self.batch(torch.arange(len(self)))


def _as_float(t: torch.Tensor) -> torch.Tensor:
    return t.float().div_(255) if t.dtype == torch.uint8 else t


@dataclass
class DatasetSplits:
    """``train`` for self-supervised training and probe fitting, ``test`` for reporting.

    ``stream``, when set, is what pretraining reads instead of ``train`` (an iterable over tar shards,
    ``mmssl.data.shards``); ``train`` then holds a bounded in-memory sample of it for the probes.
    ``meta["skipped_files"]`` lists files dropped while caching (``data.on_error=skip``).
    """

    train: ArrayDataset
    test: ArrayDataset
    meta: dict = field(default_factory=dict)
    stream: object | None = None

    def cached(self, cache: str, on_error: str = "stop") -> DatasetSplits:
        """``cache="memory"``: both splits read into memory now; ``"none"``: left lazy (read per batch)."""
        if cache not in ("memory", "none"):
            raise DataError(f"data.cache must be memory or none, got {cache!r}")
        check_on_error(on_error)
        if cache == "none":
            self.train.on_error = self.test.on_error = on_error
            return self
        train, bad_train = self.train.materialize(on_error)
        test, bad_test = self.test.materialize(on_error)
        skipped = list(self.meta.get("skipped_files", [])) + bad_train + bad_test
        return DatasetSplits(train, test, self.meta | ({"skipped_files": skipped} if skipped else {}), self.stream)


def split_indices(n: int, test_fraction: float, seed: int,
                  labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded train/test index split, stratified by label when labels are given."""
    if not 0 < test_fraction < 1:
        raise DataError(f"test_fraction must be in (0, 1), got {test_fraction}")
    g = torch.Generator().manual_seed(seed)
    if labels is None:
        perm = torch.randperm(n, generator=g)
        k = int(round(n * test_fraction))
        return perm[k:], perm[:k]
    train, test = [], []
    for c in torch.unique(labels):
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        k = int(round(len(idx) * test_fraction))
        test.append(idx[:k])
        train.append(idx[k:])
    return torch.cat(train).sort().values, torch.cat(test).sort().values


def group_split(groups: list[str], test_groups: list[str], where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, test) indices holding out every item whose group (speaker, writer, session) is in ``test_groups``.

    A group name that no item has raises a one-line ``DataError`` listing the groups there are.
    """
    known = sorted(set(groups))
    unknown = [g for g in test_groups if g not in known]
    if unknown:
        shown = ", ".join(known[:30]) + (f", … ({len(known)} in all)" if len(known) > 30 else "")
        raise DataError(f"{where}: test_groups {unknown} not found; the groups are: {shown} "
                        "(check data.test_groups and data.group_pattern)")
    held = set(test_groups)
    if held == set(known):
        raise DataError(f"{where}: test_groups holds out every group {known}; leave at least one for training")
    is_test = torch.tensor([g in held for g in groups])
    return torch.nonzero(~is_test).flatten(), torch.nonzero(is_test).flatten()


def split_dataset(full: ArrayDataset, test_fraction: float, seed: int,
                  test_groups: list[str] | None = None) -> tuple[ArrayDataset, ArrayDataset]:
    """(train, test) of ``full``: the named ``test_groups`` held out when given, else stratified by label."""
    if test_groups:
        if full.groups is None:
            raise DataError(f"{full.name} has no groups, so data.test_groups cannot be used; read them from file "
                            "names with data.group_pattern (folders) or data.group_column (manifests)")
        train, test = group_split(full.groups, [str(g) for g in test_groups], full.name)
    else:
        train, test = split_indices(len(full), test_fraction, seed, full.labels)
    return full.subset(train, f"{full.name}/train"), full.subset(test, f"{full.name}/test")


def group_of(path: str, pattern: str | None, where: str) -> str | None:
    """The group of ``path`` read with regex ``pattern`` (named group ``group``, else group 1, else the match)."""
    import re

    if pattern is None:
        return None
    try:
        m = re.search(pattern, path)
    except re.error as exc:
        raise DataError(f"data.group_pattern {pattern!r} is not a valid regular expression ({exc})") from None
    if m is None:
        raise DataError(f"{where}: data.group_pattern {pattern!r} does not match {path!r}; "
                        r"write a regex that matches every file, e.g. '_(?P<group>[^_]+)_\d+\.'")
    if "group" in m.re.groupindex:
        return m.group("group")
    return m.group(1) if m.re.groups else m.group(0)


def stratified_limit(n: int, labels: torch.Tensor | None, limit: int, seed: int) -> torch.Tensor:
    """Sorted indices of a random sample of ``limit`` items, class proportions kept (largest remainders), fixed by seed.

    Replaces "the first ``limit`` items", which in a class-ordered folder is the first few classes only.
    """
    if limit < 1:
        raise DataError(f"data.limit must be ≥ 1, got {limit}")
    g = torch.Generator().manual_seed(int(seed))
    if limit >= n:
        return torch.arange(n)
    if labels is None:
        return torch.randperm(n, generator=g)[:limit].sort().values
    classes, counts = torch.unique(labels, return_counts=True)
    quota = counts.double() * limit / n
    take = quota.floor().long()
    order = torch.argsort(quota - take.double(), descending=True, stable=True)
    take[order[:limit - int(take.sum())]] += 1
    chosen = []
    for c, k in zip(classes.tolist(), take.tolist()):
        idx = torch.nonzero(labels == c).flatten()
        chosen.append(idx[torch.randperm(len(idx), generator=g)[:k]])
    return torch.cat(chosen).sort().values


class BatchIterator:
    """Endless shuffled batches: epoch e uses permutation ``randperm(N, seed + e)``; drops the last partial batch.

    Each batch carries ``extra["index"]`` (B,) dataset indices and ``extra["epoch"]`` (B,) its epoch.

    ``batches_from(step)`` starts at any global step, which is how a resumed run continues exactly.
    """

    def __init__(self, dataset: ArrayDataset, batch_size: int, seed: int = 0):
        if batch_size < 1:
            raise DataError(f"batch_size must be ≥ 1, got {batch_size}")
        self.dataset = dataset
        self.batch_size = min(batch_size, len(dataset))
        self.seed = seed
        self.per_epoch = max(1, len(dataset) // self.batch_size)

    def indices_from(self, step: int = 0) -> Iterator[torch.Tensor]:
        """The (batch_size,) index tensors of steps ``step, step + 1, …``."""
        epoch, i = divmod(step, self.per_epoch)
        while True:
            perm = torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(self.seed * 100003 + epoch))
            for j in range(i, self.per_epoch):
                yield perm[j * self.batch_size:(j + 1) * self.batch_size]
            epoch, i = epoch + 1, 0

    def batches_from(self, step: int = 0) -> Iterator[Batch]:
        for s, idx in enumerate(self.indices_from(step), step):
            batch = self.dataset.batch(idx)
            # dataset indices and the epoch, for objectives with per-sample memory (DeepCluster-v2)
            batch.extra.update(index=idx, epoch=torch.full_like(idx, s // self.per_epoch))
            yield batch


def iterate(dataset: ArrayDataset, batch_size: int) -> Iterator[Batch]:
    """Every item once, in order (evaluation)."""
    for start in range(0, len(dataset), batch_size):
        yield dataset.batch(torch.arange(start, min(start + batch_size, len(dataset))))
