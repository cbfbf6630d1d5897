"""Image datasets: scikit-learn digits (the default), Fashion-MNIST IDX files, torchvision sets, image folders.

Each builder returns ``DatasetSplits`` of uint8 (N, C, H, W) images and integer labels, with splits
fixed by ``seed``.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from mmssl.data.base import (
    ArrayDataset,
    DatasetSplits,
    group_of,
    split_dataset,
    split_indices,
    stratified_limit,
)
from mmssl.data.lazy import LazyColumn, path_array
from mmssl.errors import DataError
from mmssl.registry import DATASETS
from mmssl.types import IMAGE

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]
DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
#: default ``max_pixels``: larger images (or decompression bombs claiming to be) are refused before decoding
MAX_PIXELS = 50_000_000


def open_image(path: str | Path, max_pixels: int | None = MAX_PIXELS, mode: str = "RGB"):
    """A decoded PIL image of ``path`` in ``mode``; missing, corrupt or too large files raise ``DataError`` naming it.

    The pixel count is read from the header (PIL opens lazily) and checked against ``max_pixels`` before
    any decoding, so a small file that claims 100k × 100k pixels costs nothing. ``None``: no limit.
    """
    import warnings

    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise DataError(f"image {p} {'is a folder, not a file' if p.is_dir() else 'does not exist'}; fix the path")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit below says it better
            saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                with Image.open(p) as img:
                    width, height = img.size
                    if max_pixels is not None and width * height > max_pixels:
                        raise DataError(f"image {p} is {width}×{height} = {width * height:,} pixels, over the limit of "
                                        f"{max_pixels:,} (a decompression bomb or an enormous image); shrink it or "
                                        "raise data.max_pixels")
                    return img.convert(mode)
            finally:
                Image.MAX_IMAGE_PIXELS = saved
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        # PIL reports broken files as OSError, ValueError or even SyntaxError (bad PNG chunks)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"cannot read image {p}: {first}; remove or replace it") from None


def _resize(images: torch.Tensor, size: int | None, channels: int) -> torch.Tensor:
    """uint8 (N, C, H, W) resized to ``size``×``size`` and/or grey repeated to ``channels``."""
    if size and tuple(images.shape[-2:]) != (size, size):
        images = torch.nn.functional.interpolate(images.float(), size=(size, size), mode="bilinear",
                                                 align_corners=False).round().clamp(0, 255).to(torch.uint8)
    if channels != images.shape[1]:
        if images.shape[1] != 1:
            raise DataError(f"cannot turn {images.shape[1]}-channel images into {channels} channels")
        images = images.expand(-1, channels, -1, -1).contiguous()
    return images


def _splits(images: torch.Tensor, labels: torch.Tensor, classes: list[str], name: str, test_fraction: float,
            seed: int, limit: int | None = None) -> DatasetSplits:
    if len(images) == 0:
        raise DataError(f"{name} is empty: no images found; check the path")
    if len(images.shape) != 4:
        raise DataError(f"{name}: images must be (N, C, H, W), got shape {tuple(images.shape)}")
    full = ArrayDataset({IMAGE: images}, labels, classes, name)
    if limit:
        full = full.subset(stratified_limit(len(full), full.labels, int(limit), seed))
    train, test = split_indices(len(full), test_fraction, seed, full.labels)
    return DatasetSplits(full.subset(train, f"{name}/train"), full.subset(test, f"{name}/test"))


@DATASETS.register("digits", modalities=(IMAGE,))
def digits(seed: int = 0, test_fraction: float = 0.3, size: int = 8, channels: int = 1) -> DatasetSplits:
    """scikit-learn's 1797 real handwritten digits, 8×8 grayscale (optionally resized and repeated to RGB)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = _resize(torch.from_numpy(np.round(d.images * (255 / 16))).to(torch.uint8).unsqueeze(1), size, channels)
    return _splits(images, torch.from_numpy(d.target).long(), DIGIT_NAMES, "digits", test_fraction, seed)


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped), the format of MNIST and Fashion-MNIST."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read IDX file {path}: {exc}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file (bad magic); is it corrupt?")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path} is truncated: header says {dims}, found {data.size} values")
    return data.reshape(dims)


def _find(root: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (root / name).exists():
            return root / name
    raise DataError(f"{stem}[.gz] not found in {root}; install it with `apt-get install dataset-fashion-mnist` "
                    "or pass data.root=<dir with the IDX files>")


@DATASETS.register("fashion_mnist", modalities=(IMAGE,))
def fashion_mnist(seed: int = 0, root: str = FASHION_MNIST_DIR, limit: int | None = None,
                  test_fraction: float = 0.3, use_official_split: bool = True, size: int | None = None,
                  channels: int = 1) -> DatasetSplits:
    """Fashion-MNIST (70k real 28×28 clothing images) from IDX files, e.g. Debian's dataset-fashion-mnist.

    ``limit`` keeps the first N training and N/6 test images (small, fast runs).
    """
    r = Path(root)
    if not r.is_dir():
        raise DataError(f"Fashion-MNIST directory {root} does not exist; `apt-get install dataset-fashion-mnist` "
                        "or pass data.root=<dir>")
    load = lambda stem: torch.from_numpy(read_idx(_find(r, stem)).copy())  # noqa: E731
    x_tr, y_tr = _resize(load("train-images-idx3-ubyte").unsqueeze(1), size, channels), load("train-labels-idx1-ubyte").long()
    x_te, y_te = _resize(load("t10k-images-idx3-ubyte").unsqueeze(1), size, channels), load("t10k-labels-idx1-ubyte").long()
    if not use_official_split:
        return _splits(torch.cat([x_tr, x_te]), torch.cat([y_tr, y_te]), FASHION_CLASSES, "fashion_mnist",
                       test_fraction, seed, limit)
    if limit:
        g = torch.Generator().manual_seed(seed)
        tr, te = torch.randperm(len(x_tr), generator=g)[:limit], torch.randperm(len(x_te), generator=g)[:max(1, limit // 6)]
        x_tr, y_tr, x_te, y_te = x_tr[tr], y_tr[tr], x_te[te], y_te[te]
    return DatasetSplits(ArrayDataset({IMAGE: x_tr}, y_tr, FASHION_CLASSES, "fashion_mnist/train"),
                         ArrayDataset({IMAGE: x_te}, y_te, FASHION_CLASSES, "fashion_mnist/test"))


ASPECTS = ("crop", "squash")


def _stack_pil(items, size: int | None, channels: int = 3, aspect: str = "squash") -> tuple[torch.Tensor, torch.Tensor]:
    """PIL images → uint8 (N, channels, size, size): grey ("L") or RGB, then ``aspect`` "squash" (resize both
    sides to ``size``) or "crop" (resize the shorter side to ``size``, centre-crop the other: no distortion)."""
    from torchvision.transforms.v2 import functional as TF

    if channels not in (1, 3):
        raise DataError(f"data.channels must be 1 (grey) or 3 (RGB), got {channels}")
    if aspect not in ASPECTS:
        raise DataError(f"data.aspect must be one of {', '.join(ASPECTS)}, got {aspect!r}")
    images, labels = [], []
    for img, label in items:
        t = TF.pil_to_tensor(img.convert("L" if channels == 1 else "RGB")) if not torch.is_tensor(img) else img
        if size and aspect == "crop":
            t = TF.center_crop(TF.resize(t, size, antialias=True), [size, size])
        elif size:
            t = TF.resize(t, [size, size], antialias=True)
        images.append(t)
        labels.append(int(label))
    return torch.stack(images), torch.tensor(labels)


@DATASETS.register("torchvision", modalities=(IMAGE,))
def torchvision_dataset(seed: int = 0, name: str = "CIFAR10", root: str = "data", download: bool = False,
                        size: int | None = None, limit: int | None = None) -> DatasetSplits:
    """A torchvision classification dataset (CIFAR10, CIFAR100, STL10, …) from a local copy (``download`` opt-in)."""
    import torchvision.datasets as tvd

    cls = getattr(tvd, name, None)
    if cls is None:
        raise DataError(f"torchvision has no dataset {name!r}; e.g. CIFAR10, CIFAR100, STL10, SVHN")
    splits = {}
    for split, train in (("train", True), ("test", False)):
        kwargs = {"split": split} if name in ("STL10", "SVHN") else {"train": train}
        try:
            ds = cls(root, download=download, **kwargs)
        except RuntimeError as exc:
            raise DataError(f"{name} not found under {root!r} ({exc}); put a copy there or set data.download=true") from None
        n = min(limit, len(ds)) if limit else len(ds)
        images, labels = _stack_pil((ds[i] for i in range(n)), size)
        splits[split] = ArrayDataset({IMAGE: images}, labels, list(getattr(ds, "classes", [])) or None, f"{name}/{split}")
    return DatasetSplits(splits["train"], splits["test"])


@DATASETS.register("image_folder", modalities=(IMAGE,))
def image_folder(root: str, seed: int = 0, size: int = 32, test_fraction: float = 0.2,
                 limit: int | None = None, channels: int = 3, aspect: str = "squash",
                 test_groups: list[str] | None = None, group_pattern: str | None = None,
                 cache: str = "memory", on_error: str = "stop", max_pixels: int | None = MAX_PIXELS) -> DatasetSplits:
    """Your own images: one sub-folder per class (torchvision ImageFolder layout), resized to ``size``×``size``.

    ``channels`` 1 (grey) or 3 (RGB; the config's null takes the encoder's ``in_channels``); ``aspect``
    "squash" or "crop" (shorter side to ``size``, centre crop); ``limit`` a class-stratified random sample
    fixed by ``seed``; ``test_groups`` holds out the writers/sessions that ``group_pattern`` reads from paths.
    ``cache="memory"`` decodes every file now; ``"none"`` keeps only the file index and decodes each
    batch's files when it is drawn (in ``data.num_workers`` DataLoader workers). Images over ``max_pixels``
    pixels are refused before decoding (decompression bombs).
    """
    from torchvision.datasets import ImageFolder

    try:
        ds = ImageFolder(root, loader=lambda path: path)  # the index only: (path, class) pairs
    except (FileNotFoundError, NotADirectoryError, RuntimeError) as exc:
        raise DataError(f"image folder {root!r}: {exc}".splitlines()[0]) from None
    if not ds.samples:
        raise DataError(f"image_folder:{root} is empty: no images found; check the path")
    keep = (stratified_limit(len(ds), torch.tensor(ds.targets), int(limit), seed).tolist() if limit
            else list(range(len(ds))))
    groups = ([group_of(Path(ds.samples[i][0]).relative_to(root).as_posix(), group_pattern, root) for i in keep]
              if group_pattern else None)
    images = ImageFiles([ds.samples[i][0] for i in keep], size, channels, aspect, max_pixels)
    labels = torch.tensor([ds.samples[i][1] for i in keep])
    full = ArrayDataset({IMAGE: images}, labels, ds.classes, f"image_folder:{root}", groups=groups)
    return DatasetSplits(*split_dataset(full, test_fraction, seed, test_groups)).cached(cache, on_error)


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
    Paths go through :func:`open_image` (missing files, corrupt files and images over
    ``max_pixels`` pixels are one-line errors, checked from the header before decoding).
    """
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms.v2 import functional as TF

    mode = "L" if channels == 1 else "RGB"
    if isinstance(source, str | Path):
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
