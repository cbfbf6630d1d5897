"""The training loader: this rank's batches from any step on, decoded in ``torch.utils.data.DataLoader`` workers.

Map-style datasets (``ArrayDataset``, in memory or lazy): a sampler yields, for steps ``s, s+1, …``,
the global batch's indices (``BatchIterator.indices_from``: a function of seed and step) cut to this
rank's contiguous slice, so a rank decodes only its own files. The DataLoader hands whole index
batches to its workers in turn (``batch_size=None``: one ``fetch`` per batch) and returns them in
order, so the batch at a step is the same whatever ``num_workers`` is, and a resumed run continues
exactly. In-memory datasets are indexed in the main process (workers would only add copies).

Iterable tar shards (``mmssl.data.shards``): each (rank, worker) reads its own shards; the batch order
is fixed by seed, epoch, world size and ``num_workers``, and the position in it is checkpointed
(``state_dict``) so resuming continues exactly with the same world size and worker count.

Unreadable files are dropped from their batch (``on_error="skip"``, counted in ``decode_errors`` and
named once on the console) or stop the run with ``DataError`` naming the file (``"stop"``).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from mmssl.data.base import ArrayDataset, BatchIterator
from mmssl.data.lazy import check_on_error
from mmssl.errors import ConfigError, DataError
from mmssl.logging import console
from mmssl.types import Batch

#: warn about this many unreadable files by name, then only count them
NAMED_ERRORS = 20


def rank_slice(idx: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """This rank's contiguous ``1/world`` part of a global index batch (the split ``distributed.shard`` makes)."""
    if world == 1:
        return idx
    if len(idx) % world:
        raise ConfigError(f"data.batch_size={len(idx)} is not divisible by the world size {world}; pick a multiple")
    per = len(idx) // world
    return idx[rank * per:(rank + 1) * per]


class StepSampler(torch.utils.data.Sampler):
    """Index batches for steps ``start, start+1, …`` (endless): the global batch of each step, this rank's part."""

    def __init__(self, n: int, batch_size: int, seed: int, start: int = 0, rank: int = 0, world: int = 1):
        self.order = BatchIterator(_Sized(n), batch_size, seed)
        self.start, self.rank, self.world = start, rank, world

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int]]:
        """(this rank's indices, epoch) per step."""
        for step, idx in enumerate(self.order.indices_from(self.start), self.start):
            yield rank_slice(idx, self.rank, self.world), step // self.order.per_epoch


class _Sized:
    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n


class _Fetch(torch.utils.data.Dataset):
    """``dataset[index batch]`` → ``ArrayDataset.fetch`` (one call per batch, in a worker)."""

    def __init__(self, dataset: ArrayDataset):
        self.dataset = dataset

    def __getitem__(self, item):
        idx, epoch = item
        return (*self.dataset.fetch(idx), epoch)


def _identity(x):
    return x


class Loader:
    """Endless batches for one rank from ``start_step`` on; ``state_dict()`` goes into the checkpoint.

    ``dataset`` is an ``ArrayDataset`` or a ``ShardStream``; ``batch_size`` is the global batch.
    """

    def __init__(self, dataset, batch_size: int, seed: int, start_step: int = 0, rank: int = 0, world: int = 1,
                 num_workers: int = 0, on_error: str = "stop", pin_memory: bool = False, state: dict | None = None):
        if num_workers < 0:
            raise ConfigError(f"data.num_workers must be ≥ 0, got {num_workers}")
        self.dataset, self.batch_size, self.seed = dataset, int(batch_size), int(seed)
        self.start_step, self.rank, self.world = int(start_step), int(rank), int(world)
        self.num_workers, self.on_error, self.pin_memory = int(num_workers), check_on_error(on_error), pin_memory
        state = state or {}
        self.decode_errors = int(state.get("decode_errors", 0))
        self.stream_state = state.get("stream")

    def state_dict(self) -> dict:
        state = {"decode_errors": self.decode_errors}
        if self.stream_state is not None:
            state["stream"] = dict(self.stream_state)
        return state

    def _dataloader(self, dataset, sampler=None) -> torch.utils.data.DataLoader:
        # a private generator for the DataLoader's base seed: drawing it from torch's global RNG would shift
        # the augmentation stream by one draw and break bit-exact resume
        return torch.utils.data.DataLoader(
            dataset, batch_size=None, sampler=sampler, num_workers=self.num_workers, collate_fn=_identity,
            pin_memory=self.pin_memory, generator=torch.Generator().manual_seed(self.seed),
            prefetch_factor=2 if self.num_workers else None, persistent_workers=False)

    def __iter__(self) -> Iterator[Batch]:
        if not isinstance(self.dataset, ArrayDataset):
            yield from self._stream()
            return
        sampler = StepSampler(len(self.dataset), self.batch_size, self.seed, self.start_step, self.rank, self.world)
        fetch = _Fetch(self.dataset)
        source = (fetch[item] for item in sampler) if not self.dataset.is_lazy else \
            iter(self._dataloader(fetch, sampler))
        for data, labels, errors, index, epoch in source:
            batch = self._batch(data, labels, errors)
            # dataset indices and the epoch, for objectives with per-sample memory (DeepCluster-v2)
            batch.extra.update(index=index, epoch=torch.full_like(index, epoch))
            yield batch

    def _stream(self) -> Iterator[Batch]:
        stream = self.dataset
        state = self.stream_state or stream.initial_state(self.num_workers)
        if int(state.get("workers", max(1, self.num_workers))) != max(1, self.num_workers):
            raise ConfigError(f"this run read its tar shards with data.num_workers={state['workers']}; resume with the "
                              f"same value (the shard-to-worker assignment fixes the batch order)")
        while True:
            stream.configure(self.rank, self.world, self.batch_size, state)
            produced = 0
            for data, labels, errors, worker in self._dataloader(stream):
                state = stream.advance(state, worker)
                self.stream_state = state
                produced += 1
                yield self._batch(data, labels, errors)
            if produced == 0 and not any(state["consumed"]):
                raise DataError(f"{stream.name}: an epoch gave rank {self.rank} no full batch of "
                                f"{self.batch_size // self.world}; add shards or lower data.batch_size")
            state = stream.next_epoch(state)
            self.stream_state = state

    def _batch(self, data: dict, labels, errors: list[str]) -> Batch:
        if errors:
            if self.on_error == "stop":
                raise DataError(errors[0] + " (or set data.on_error=skip to drop unreadable files)")
            for message in errors:
                self.decode_errors += 1
                if self.decode_errors <= NAMED_ERRORS:
                    console(f"warning: skipped {message}")
        if not data or len(next(iter(data.values()))) == 0:
            raise DataError("every file of a batch was unreadable; check the data (the skipped files are named above)")
        return Batch(data, labels)
