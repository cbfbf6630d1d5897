"""WebDataset tar shards: decoded in workers, split over ranks and workers, exact resume from the loader state."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from mmssl.data.loader import Loader
from mmssl.errors import DataError
from mmssl.registry import DATASETS


def write_shards(root, shards=4, per_shard=7, size=10, broken=None):
    """``shards`` tar files of ``per_shard`` PNG + label + text samples; ``broken`` = (shard, index) gets a bad image."""
    import webdataset as wds

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for s in range(shards):
        with wds.TarWriter(str(root / f"train-{s:06d}.tar")) as sink:
            for i in range(per_shard):
                buf = io.BytesIO()
                Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
                image = b"not a png" if broken == (s, i) else buf.getvalue()
                sink.write({"__key__": f"{s:03d}{i:04d}", "png": image, "cls": str((s + i) % 3).encode(),
                            "txt": f"item {s} {i}".encode()})
    return root


def _take(loader, n):
    it = iter(loader)
    return [next(it) for _ in range(n)]


def test_shards_build_probe_splits_and_stream(tmp_path):
    root = write_shards(tmp_path / "s")
    splits = DATASETS.build("webdataset", urls=str(root), size=8, probe_items=20, test_fraction=0.25)
    assert splits.train.modalities == ["image", "text"] and len(splits.train) + len(splits.test) == 20
    assert splits.train.data["image"].dtype == torch.uint8 and splits.train.data["image"].shape[1:] == (3, 8, 8)
    batch = next(iter(Loader(splits.stream, 4, seed=0)))
    assert batch["image"].shape == (4, 3, 8, 8) and batch["text"].shape == (4, 32) and batch.labels.shape == (4,)
    assert 0 <= batch["image"].min() and batch["image"].max() <= 1
    brace = DATASETS.build("webdataset", urls=str(root / "train-{000000..000003}.tar"), size=8, probe_items=8)
    assert len(brace.stream.urls) == 4
    with pytest.raises(DataError, match="no tar shards"):
        DATASETS.build("webdataset", urls=str(tmp_path / "nothing-*.tar"))


def test_every_sample_read_once_per_epoch_over_ranks_and_workers(tmp_path):
    root = write_shards(tmp_path / "s", shards=4, per_shard=6)
    stream = DATASETS.build("webdataset", urls=str(root), size=8, probe_items=12, shuffle_buffer=4).stream
    seen = []
    for rank in range(2):
        loader = Loader(stream, 4, seed=0, rank=rank, world=2, num_workers=2)
        for batch in _take(loader, 6):  # 2 shards × 6 samples / 2 per batch = one epoch of this rank
            seen += batch["text"].tolist()
    assert len(seen) == 24 and len({tuple(t) for t in seen}) == 24


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_from_loader_state_is_exact(tmp_path, workers):
    root = write_shards(tmp_path / "s", shards=5, per_shard=5)  # uneven: workers run out at different times
    stream = DATASETS.build("webdataset", urls=str(root), size=8, probe_items=12, shuffle_buffer=3).stream
    straight = _take(Loader(stream, 2, seed=7, num_workers=workers), 25)  # > one epoch of 12 batches
    for stop in (1, 5, 11, 12, 13):
        first = Loader(stream, 2, seed=7, num_workers=workers)
        _take(first, stop)
        rest = _take(Loader(stream, 2, seed=7, num_workers=workers, state=first.state_dict()), 25 - stop)
        for a, b in zip(straight[stop:], rest):
            assert torch.equal(a["image"], b["image"]) and torch.equal(a.labels, b.labels), stop


def test_broken_sample_is_skipped_and_counted_or_stops(tmp_path):
    root = write_shards(tmp_path / "s", shards=1, per_shard=8, broken=(0, 2))
    skip = DATASETS.build("webdataset", urls=str(root), size=8, probe_items=12, shuffle_buffer=0, on_error="skip")
    loader = Loader(skip.stream, 4, seed=0, on_error="skip")
    sizes = [b.size for b in _take(loader, 2)]
    assert sorted(sizes) == [3, 4] and loader.decode_errors == 1
    with pytest.raises(DataError, match=r"train-000000\.tar:0000002\.png"):
        DATASETS.build("webdataset", urls=str(root), size=8, probe_items=8)
    stop = DATASETS.build("webdataset", urls=str(root), size=8, probe_items=2, shuffle_buffer=0, label_key=None, test_fraction=0.5)
    with pytest.raises(DataError, match=r"0000002\.png"):
        _take(Loader(stop.stream, 4, seed=0), 2)
