import gzip
import struct

import numpy as np
import pytest
import torch

from mmssl.data.base import ArrayDataset, BatchIterator, split_indices
from mmssl.data.images import read_idx
from mmssl.errors import DataError
from mmssl.registry import DATASETS


def test_digits_splits_fixed_by_seed_and_stratified():
    a, b, c = DATASETS.build("digits", seed=0), DATASETS.build("digits", seed=0), DATASETS.build("digits", seed=1)
    assert len(a.train) + len(a.test) == 1797
    assert torch.equal(a.test.data["image"], b.test.data["image"])
    assert not torch.equal(a.test.data["image"], c.test.data["image"])
    counts = torch.bincount(a.test.labels, minlength=10)
    assert counts.min() >= 50 and counts.max() <= 56  # ~30% of every class
    x = a.train.batch(torch.arange(4))["image"]
    assert x.shape == (4, 1, 8, 8) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1


def test_digits_resized_rgb():
    s = DATASETS.build("digits", size=16, channels=3)
    assert s.train.data["image"].shape[1:] == (3, 16, 16)


def test_batch_iterator_resumes_anywhere():
    ds = ArrayDataset({"image": torch.arange(10).view(10, 1, 1, 1).float()}, torch.arange(10))
    it = BatchIterator(ds, 3, seed=4)
    straight = [b.labels for _, b in zip(range(7), it.batches_from(0))]
    resumed = [b.labels for _, b in zip(range(4), it.batches_from(3))]
    assert all(torch.equal(x, y) for x, y in zip(straight[3:], resumed))
    epoch0 = torch.cat(straight[:3])
    assert len(set(epoch0.tolist())) == 9  # a permutation, last partial batch dropped


def test_empty_and_mismatched_datasets():
    with pytest.raises(DataError, match="is empty"):
        ArrayDataset({"image": torch.zeros(0, 1, 8, 8)}, torch.zeros(0))
    with pytest.raises(DataError, match="different lengths"):
        ArrayDataset({"image": torch.zeros(3, 1, 8, 8)}, torch.zeros(2))


def _write_idx(path, array):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_reads_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("t10k", 6)):
        _write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 28, 28)))
        _write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    s = DATASETS.build("fashion_mnist", root=str(tmp_path))
    assert s.train.data["image"].shape == (12, 1, 28, 28) and len(s.test) == 6
    assert s.train.labels.tolist()[:3] == [0, 1, 2]


def test_corrupt_idx_file(tmp_path):
    bad = tmp_path / "x.gz"
    bad.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="cannot read IDX"):
        read_idx(bad)
    trunc = tmp_path / "t.gz"
    with gzip.open(trunc, "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + struct.pack(">I", 100) + b"\x01" * 10)
    with pytest.raises(DataError, match="truncated"):
        read_idx(trunc)


def test_missing_fashion_dir():
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        DATASETS.build("fashion_mnist", root="/nonexistent/fmnist")


def test_split_indices_validates_fraction():
    with pytest.raises(DataError, match="test_fraction"):
        split_indices(10, 1.5, 0)


def test_image_folder_reads_real_files_and_reports_corrupt_ones(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(5):
            Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    s = DATASETS.build("image_folder", root=str(tmp_path), size=16, test_fraction=0.2)
    assert s.train.data["image"].shape[1:] == (3, 16, 16) and len(s.train) + len(s.test) == 10
    assert s.train.classes == ["cat", "dog"]
    (tmp_path / "dog" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match=r"corrupt image .*broken\.png"):
        DATASETS.build("image_folder", root=str(tmp_path))
