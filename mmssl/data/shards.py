"""``webdataset``: sharded tar archives in the WebDataset format, streamed with the ``webdataset`` library.

A shard is a tar file whose members are grouped into samples by key: ``000123.jpg``, ``000123.cls``,
``000123.wav``, ``000123.txt`` make one sample. Which extension feeds which modality is the
``modalities`` option (default ``image: jpg;jpeg;png;webp``, ``audio: wav;flac;ogg``, ``text: txt``;
a modality whose extensions never occur is dropped); ``cls`` holds the integer label.

Streaming (``ShardStream``): epoch e shuffles the shard list with ``(seed, e)``, rank r takes every
world-th shard and worker w of W every W-th of those, so each file is read by one process. Inside a
worker the raw samples pass a seeded shuffle buffer, are cut into batches of ``batch_size / world``
(the last partial one dropped) and only then decoded. The DataLoader takes batches from its workers
in turn, so the order is fixed by (seed, epoch, world size, W); the loader checkpoints how many
batches each worker has given, and a resumed run skips those (undecoded) and restarts the turn at
the right worker — exact resume with the same world size and ``num_workers``.

Probes and evaluation need random access, so ``train`` is the first ``probe_items`` samples of the
shards read into memory and ``test`` is ``test_urls`` (also read into memory; keep it small), or a
held-out part of that sample when no ``test_urls`` are given.
"""

from __future__ import annotations

import glob
import io
import os
from pathlib import Path

import torch

from mmssl.data.base import ArrayDataset, DatasetSplits, split_indices
from mmssl.data.images import decode_image
from mmssl.data.lazy import check_on_error
from mmssl.errors import DataError
from mmssl.registry import DATASETS
from mmssl.types import AUDIO, IMAGE, TEXT

DEFAULT_KEYS = {IMAGE: "jpg;jpeg;png;webp", AUDIO: "wav;flac;ogg", TEXT: "txt"}


def expand_shards(urls: str | list[str]) -> list[str]:
    """Shard paths from a brace pattern (``shards/train-{000000..000031}.tar``), a folder, a glob or a list."""
    from webdataset.shardlists import expand_urls

    if isinstance(urls, (list, tuple)):
        found = [str(u) for u in urls]
    elif os.path.isdir(urls):
        found = sorted(str(p) for p in Path(urls).glob("*.tar"))
    elif any(c in urls for c in "*?["):
        found = sorted(glob.glob(urls))
    else:
        found = expand_urls(urls)
    missing = [u for u in found if "://" not in u and not os.path.exists(u)]
    if not found or missing:
        raise DataError(f"no tar shards at {urls!r}" + (f" (missing {missing[:3]})" if missing else "")
                        + "; pass data.urls=<folder, glob or brace pattern of .tar files>")
    return found


class SampleDecoder:
    """Raw webdataset samples (dict of bytes) → per-modality tensors; errors name ``shard:key.ext``."""

    def __init__(self, keys: dict[str, str], size: int, channels: int, sample_rate: int, samples: int,
                 context_length: int, label_key: str | None):
        self.keys = {m: [e.strip().lower() for e in exts.split(";") if e.strip()] for m, exts in keys.items()}
        self.size, self.channels, self.sample_rate, self.samples = size, channels, sample_rate, samples
        self.context_length, self.label_key = context_length, label_key

    def item_shape(self, modality: str) -> tuple[int, ...]:
        return {IMAGE: (self.channels, self.size, self.size), AUDIO: (self.samples,), TEXT: (self.context_length,)}[modality]

    def name(self, sample: dict, ext: str = "") -> str:
        return f"{sample.get('__url__', '?')}:{sample.get('__key__', '?')}{'.' + ext if ext else ''}"

    def decode(self, sample: dict) -> dict:
        """One sample → {modality: tensor (text stays a string), "label": int?}; raises ``DataError``."""
        from mmssl.data.audio import fit_length, read_audio

        out = {}
        for modality, exts in self.keys.items():
            ext = next((e for e in exts if e in sample), None)
            if ext is None:
                raise DataError(f"sample {self.name(sample)} has none of {exts} for {modality}; every sample needs "
                                f"all modalities (set data.modalities)")
            raw, where = sample[ext], self.name(sample, ext)
            if modality == IMAGE:
                out[IMAGE] = decode_image(io.BytesIO(raw), self.size, self.channels, name=where)
            elif modality == AUDIO:
                out[AUDIO] = fit_length(read_audio(io.BytesIO(raw), self.sample_rate, name=where), self.samples)
            else:
                try:
                    out[TEXT] = raw.decode("utf-8").strip()
                except UnicodeDecodeError as exc:
                    raise DataError(f"text {where} is not UTF-8 ({exc.reason})") from None
        if self.label_key:
            if self.label_key not in sample:
                raise DataError(f"sample {self.name(sample)} has no .{self.label_key} label; label every sample "
                                "or set data.label_key=null")
            try:
                out["label"] = int(sample[self.label_key].decode().strip())
            except ValueError:
                raise DataError(f"label {self.name(sample, self.label_key)} is not an integer") from None
        return out

    def collate(self, decoded: list[dict]) -> tuple[dict, torch.Tensor | None]:
        from mmssl.data.tokenize import tokenize

        data = {}
        for modality in self.keys:
            if modality == TEXT:
                data[TEXT] = tokenize([d[TEXT] for d in decoded], self.context_length)
            elif decoded:
                data[modality] = torch.stack([d[modality] for d in decoded])
            else:
                data[modality] = torch.empty((0, *self.item_shape(modality)))
            if modality == IMAGE:
                data[IMAGE] = data[IMAGE].float().div_(255) if decoded else data[IMAGE].float()
        labels = torch.tensor([d["label"] for d in decoded], dtype=torch.long) if self.label_key else None
        return data, labels


class ShardStream(torch.utils.data.IterableDataset):
    """Endless-by-epochs stream of decoded batches from tar shards (see the module docstring for the order).

    Yields ``(data, labels, errors, worker)``; ``mmssl.data.loader.Loader`` drives it (``configure``
    before each epoch, ``advance`` per batch, ``next_epoch``) and checkpoints its state.
    """

    def __init__(self, urls: list[str], decoder: SampleDecoder, seed: int = 0, shuffle_buffer: int = 1000,
                 on_error: str = "stop", name: str = "webdataset"):
        self.urls, self.decoder, self.seed, self.shuffle_buffer = list(urls), decoder, int(seed), int(shuffle_buffer)
        self.on_error, self.name = check_on_error(on_error), name
        self.rank, self.world, self.per_rank, self.state = 0, 1, 1, self.initial_state(0)

    @property
    def modalities(self) -> list[str]:
        return list(self.decoder.keys)

    # -- position (checkpointed by the loader) ------------------------------------------------------
    @staticmethod
    def initial_state(num_workers: int) -> dict:
        workers = max(1, num_workers)
        return {"epoch": 0, "consumed": [0] * workers, "next": 0, "workers": workers}

    def configure(self, rank: int, world: int, batch_size: int, state: dict) -> None:
        """Set who reads and from where; workers get a copy of these when the DataLoader iterator starts."""
        if batch_size % world:
            raise DataError(f"data.batch_size={batch_size} is not divisible by the world size {world}; pick a multiple")
        if len(self.urls) < world:
            raise DataError(f"{self.name}: {len(self.urls)} shard(s) for {world} ranks; every rank needs at least one")
        self.rank, self.world, self.per_rank, self.state = rank, world, batch_size // world, dict(state)

    @staticmethod
    def advance(state: dict, worker: int) -> dict:
        consumed = list(state["consumed"])
        consumed[worker] += 1
        return dict(state, consumed=consumed, next=(worker + 1) % len(consumed))

    @staticmethod
    def next_epoch(state: dict) -> dict:
        return dict(state, epoch=int(state["epoch"]) + 1, consumed=[0] * len(state["consumed"]), next=0)

    def shards_for(self, epoch: int, logical_worker: int, workers: int) -> list[str]:
        perm = torch.randperm(len(self.urls), generator=torch.Generator().manual_seed(self.seed * 100003 + epoch))
        return [self.urls[i] for i in perm.tolist()][self.rank::self.world][logical_worker::workers]

    # -- reading ------------------------------------------------------------------------------------
    def __iter__(self):
        import webdataset as wds

        info = torch.utils.data.get_worker_info()
        workers, physical = (info.num_workers, info.id) if info else (1, 0)
        state = self.state
        if workers != len(state["consumed"]):
            raise DataError(f"loader state is for {len(state['consumed'])} workers, not {workers}")
        # a fresh DataLoader asks worker 0 first: rotate so it plays the worker whose turn came next
        worker = (physical + int(state["next"])) % workers
        epoch, skip = int(state["epoch"]), int(state["consumed"][worker])
        tar_errors: list[str] = []

        def on_tar_error(exc: Exception) -> bool:
            if self.on_error == "stop":
                raise DataError(f"{self.name}: unreadable tar data ({exc}); fix the shard or set data.on_error=skip")
            tar_errors.append(f"unreadable tar data ({str(exc)[:200]})")
            return True

        shards = [{"url": u} for u in self.shards_for(epoch, worker, workers)]
        samples = wds.tarfile_to_samples(handler=on_tar_error)(iter(shards))
        if self.shuffle_buffer > 1:
            seed = ((self.seed * 1000003 + epoch) * 1009 + self.rank) * 1009 + worker
            samples = wds.filters._shuffle(samples, bufsize=self.shuffle_buffer, initial=self.shuffle_buffer, seed=seed)
        batch, made = [], 0
        for sample in samples:
            batch.append(sample)
            if len(batch) < self.per_rank:
                continue
            raw, batch = batch, []
            made += 1
            if made <= skip:  # already trained on before the checkpoint: skip without decoding
                continue
            decoded, errors = [], tar_errors[:]
            tar_errors.clear()
            for sample_ in raw:
                try:
                    decoded.append(self.decoder.decode(sample_))
                except DataError as exc:
                    errors.append(str(exc))
            data, labels = self.decoder.collate(decoded)
            yield data, labels, errors, worker

    def read(self, urls: list[str], limit: int | None) -> tuple[ArrayDataset, list[str]]:
        """The first ``limit`` samples of ``urls`` in order, decoded into memory (probes, evaluation)."""
        import webdataset as wds

        def on_tar_error(exc: Exception) -> bool:
            raise DataError(f"{self.name}: unreadable tar data ({exc})")

        decoded, errors = [], []
        for sample in wds.tarfile_to_samples(handler=on_tar_error)(iter({"url": u} for u in urls)):
            if limit and len(decoded) >= limit:
                break
            try:
                decoded.append(self.decoder.decode(sample))
            except DataError as exc:
                if self.on_error == "stop":
                    raise
                errors.append(str(exc))
        if not decoded:
            raise DataError(f"{self.name}: no readable samples in {urls[:3]}")
        data, labels = self.decoder.collate(decoded)
        if IMAGE in data:  # keep images as uint8 in memory, like every other dataset
            data[IMAGE] = (data[IMAGE] * 255).round().to(torch.uint8)
        return ArrayDataset(data, labels, None, self.name), errors


@DATASETS.register("webdataset", modalities=(IMAGE, AUDIO, TEXT))
def webdataset(urls: str | list[str], seed: int = 0, test_urls: str | list[str] | None = None,
               modalities: dict | None = None, label_key: str | None = "cls", classes: list[str] | None = None,
               size: int = 32, channels: int = 3, sample_rate: int = 16000, clip_seconds: float = 1.0,
               context_length: int = 32, shuffle_buffer: int = 1000, probe_items: int = 1000,
               test_fraction: float = 0.2, on_error: str = "stop") -> DatasetSplits:
    """Sharded tar archives (WebDataset format) streamed in DataLoader workers; probes on a bounded sample."""
    train_urls = expand_shards(urls)
    keys = dict(modalities or DEFAULT_KEYS)
    unknown = [m for m in keys if m not in DEFAULT_KEYS]
    if unknown:
        raise DataError(f"data.modalities has {unknown}; tar shards can hold {list(DEFAULT_KEYS)}")
    decoder = SampleDecoder(keys, size, channels, sample_rate, int(round(clip_seconds * sample_rate)), context_length,
                            label_key)
    name = f"webdataset:{urls if isinstance(urls, str) else train_urls[0]}"
    stream = ShardStream(train_urls, decoder, seed, shuffle_buffer, on_error, name)
    if modalities is None:  # keep only the default modalities the first sample actually has
        first = next(iter(__import__("webdataset").tarfile_to_samples()(iter([{"url": train_urls[0]}]))), None)
        if first is None:
            raise DataError(f"{train_urls[0]} holds no samples")
        decoder.keys = {m: exts for m, exts in decoder.keys.items() if any(e in first for e in exts)}
        if not decoder.keys:
            raise DataError(f"{train_urls[0]}: samples have none of the extensions {DEFAULT_KEYS}; set data.modalities")
    sample, skipped = stream.read(train_urls, probe_items)
    if test_urls is None:
        train_idx, test_idx = split_indices(len(sample), test_fraction, seed, sample.labels)
        train, test = sample.subset(train_idx, f"{name}/train"), sample.subset(test_idx, f"{name}/test")
    else:
        test, more = stream.read(expand_shards(test_urls), None)
        train, skipped = sample, skipped + more
    if classes is not None:
        train.classes = test.classes = list(classes)
    return DatasetSplits(train, test, {"skipped_files": skipped} if skipped else {}, stream=stream)
