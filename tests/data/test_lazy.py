"""Lazy file datasets (data.cache=none) read the same items as cached ones; the loader is exact and skips/stops on bad files."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from mmssl.data.base import DatasetSplits
from mmssl.data.images import ImageFiles
from mmssl.data.lazy import LazyColumn
from mmssl.data.loader import Loader, StepSampler
from mmssl.errors import ConfigError, DataError
from mmssl.registry import DATASETS


def image_tree(root, per_class=6, size=(20, 24)):
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    return root


def assert_same_splits(a: DatasetSplits, b: DatasetSplits):
    for x, y in ((a.train, b.train), (a.test, b.test)):
        assert len(x) == len(y) and torch.equal(x.labels, y.labels)
        bx, by = x.all(), y.all()
        for m in bx.data:
            assert torch.equal(bx[m], by[m]), m


def test_image_folder_lazy_reads_what_the_cache_holds(tmp_path):
    root = image_tree(tmp_path / "img")
    lazy = DATASETS.build("image_folder", root=str(root), size=16, cache="none")
    cached = DATASETS.build("image_folder", root=str(root), size=16, cache="memory")
    assert lazy.train.is_lazy and not cached.train.is_lazy
    assert isinstance(lazy.train.data["image"], LazyColumn) and lazy.train.data["image"].shape[1:] == (3, 16, 16)
    assert lazy.train.data["image"].paths.dtype.kind == "S"  # the index is one byte array, not Python objects
    assert_same_splits(lazy, cached)


def test_lazy_audio_manifest_and_text_match_their_cached_versions(tmp_path):
    for label in (0, 1):
        for i in range(3):
            sf.write(tmp_path / f"{label}_s{i % 2}_{i}.wav", np.sin(np.arange(4000) * (label + 1) / 7).astype(np.float32), 8000)
    kwargs = dict(root=str(tmp_path), sample_rate=8000, clip_seconds=0.25, test_fraction=0.34)
    assert_same_splits(DATASETS.build("audio_folder", cache="none", **kwargs), DATASETS.build("audio_folder", **kwargs))

    image_tree(tmp_path / "img", per_class=2)
    rows = [{"image": f"img/{c}/{i}.png", "audio": f"{int(c == 'dog')}_s{i % 2}_{i}.wav", "text": f"a {c} {i}", "label": c}
            for c in ("cat", "dog") for i in range(2)]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    kwargs = dict(path=str(tmp_path / "m.jsonl"), image_size=8, channels=3, sample_rate=8000, test_fraction=0.5)
    assert_same_splits(DATASETS.build("manifest", cache="none", **kwargs), DATASETS.build("manifest", **kwargs))

    corpus = tmp_path / "c.txt"
    corpus.write_text("pos\tgreat film\n\nneg\tdull plot\npos\tsuperb ending é\nneg\tweak acting\n", encoding="utf-8")
    kwargs = dict(path=str(corpus), context_length=8, label_separator="\t", test_fraction=0.5)
    assert_same_splits(DATASETS.build("text_corpus", cache="none", **kwargs), DATASETS.build("text_corpus", **kwargs))


def test_corrupt_file_is_named_and_skipped_or_stops(tmp_path):
    root = image_tree(tmp_path / "img", per_class=3)
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match=r"corrupt image .*broken\.png"):
        DATASETS.build("image_folder", root=str(root), size=8, cache="memory")
    cached = DATASETS.build("image_folder", root=str(root), size=8, cache="memory", on_error="skip", test_fraction=0.3)
    assert len(cached.train) + len(cached.test) == 6 and "broken.png" in cached.meta["skipped_files"][0]

    lazy = DATASETS.build("image_folder", root=str(root), size=8, cache="none", test_fraction=0.3)
    full = lazy.train if any(b"broken" in p for p in lazy.train.data["image"].paths) else lazy.test
    data, labels, errors, _ = full.fetch(torch.arange(len(full)))
    assert len(errors) == 1 and "broken.png" in errors[0]
    assert len(data["image"]) == len(labels) == len(full) - 1
    loader = Loader(full, len(full), seed=0, on_error="skip")
    batch = next(iter(loader))
    assert batch.size == len(full) - 1 and loader.decode_errors == 1 and loader.state_dict()["decode_errors"] == 1
    with pytest.raises(DataError, match=r"broken\.png.*data\.on_error=skip"):
        next(iter(Loader(full, len(full), seed=0, on_error="stop")))


def test_sampler_is_the_global_batch_sliced_per_rank():
    it = [iter(StepSampler(12, 4, seed=3, start=0, rank=r, world=2)) for r in range(2)]
    ref = iter(StepSampler(12, 4, seed=3, start=0))
    for step in range(7):
        (a, epoch_a), (b, epoch_b), (whole, epoch) = next(it[0]), next(it[1]), next(ref)
        assert torch.equal(torch.cat([a, b]), whole) and epoch_a == epoch_b == epoch == step // 3
    later = iter(StepSampler(12, 4, seed=3, start=4))
    ref = iter(StepSampler(12, 4, seed=3, start=0))
    for _ in range(4):
        next(ref)
    assert torch.equal(next(later)[0], next(ref)[0])
    with pytest.raises(ConfigError, match="divisible"):
        next(iter(StepSampler(12, 3, seed=0, world=2)))


def test_workers_give_the_same_batches_as_the_main_process(tmp_path):
    lazy = DATASETS.build("image_folder", root=str(image_tree(tmp_path / "img")), size=8, cache="none").train
    base = iter(Loader(lazy, 4, seed=1, num_workers=0))
    workers = iter(Loader(lazy, 4, seed=1, num_workers=2))
    resumed = iter(Loader(lazy, 4, seed=1, num_workers=2, start_step=3))
    batches = [next(base) for _ in range(6)]
    for i in range(6):
        b = next(workers)
        assert torch.equal(b["image"], batches[i]["image"]) and torch.equal(b.labels, batches[i].labels)
    for i in range(3, 6):
        assert torch.equal(next(resumed)["image"], batches[i]["image"])


def test_bad_cache_and_on_error_values():
    column = ImageFiles(["x.png"], 8)
    assert len(column.take(torch.tensor([0, 0]))) == 2
    with pytest.raises(DataError, match="data.cache"):
        DatasetSplits(None, None).cached("disk")
    with pytest.raises(DataError, match="data.on_error"):
        Loader(None, 4, 0, on_error="ignore")
