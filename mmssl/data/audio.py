"""``audio_folder``: your own labelled clips, read with soundfile and resampled to one rate.

Two layouts: flat files named ``{label}_{speaker}_{index}.{wav,flac,ogg}`` (the Free Spoken Digit
Dataset's convention, and what ``synth_speech`` writes), or one sub-folder per class (any file names;
the speaker is the name's second ``_`` field when there is one). Clips are mixed to mono, resampled
to ``sample_rate`` (default: the files' own rate when they agree) and centred/cropped to ``clip_seconds``.
``test_groups`` names the speakers (or the groups ``group_pattern`` reads from paths) held out for the
test split; ``split_by_speaker`` holds out a seeded random set of speakers; otherwise the split is
stratified by class.
"""

from __future__ import annotations

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
from mmssl.types import AUDIO

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
#: the rate clips of mixed rates are resampled to when data.sample_rate is not given
DEFAULT_SAMPLE_RATE = 16000


def read_audio(path, sample_rate: int | None = None, name: str | None = None) -> torch.Tensor:
    """One clip (a path or a file object) as a mono float32 (samples,) tensor, resampled to ``sample_rate`` when given.

    Unreadable, corrupt or empty files raise ``DataError`` naming the file (``name`` for file objects).
    """
    import soundfile as sf
    import torchaudio.functional as AF

    source = path if hasattr(path, "read") else str(path)
    if not hasattr(path, "read"):
        p = Path(path)
        if not p.is_file():
            raise DataError(f"audio file {p} {'is a folder, not a file' if p.is_dir() else 'does not exist'}; fix the path")
        if p.stat().st_size == 0:
            raise DataError(f"audio file {p} is empty (0 bytes); remove or replace it")
    path = name or path
    try:
        wave, sr = sf.read(source, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
        raise DataError(f"cannot read audio file {path}: {exc}; remove or replace it") from None
    if wave.shape[0] == 0:
        raise DataError(f"audio file {path} is empty (0 samples); remove or replace it")
    wave = torch.from_numpy(np.ascontiguousarray(wave.mean(axis=1)))
    if not torch.isfinite(wave).all():
        raise DataError(f"audio file {path} contains NaN/Inf samples; it is corrupt")
    if sample_rate is not None and sr != sample_rate:
        wave = AF.resample(wave, sr, sample_rate)
    return wave


def fit_length(wave: torch.Tensor, samples: int) -> torch.Tensor:
    """(n,) → (samples,): centred in zeros when shorter, centre-cropped when longer."""
    n = len(wave)
    if n >= samples:
        start = (n - samples) // 2
        return wave[start:start + samples]
    left = (samples - n) // 2
    return torch.nn.functional.pad(wave, (left, samples - n - left))


def _class_order(names: set[str]) -> list[str]:
    """Numeric labels sort as numbers ("2" before "10"), others alphabetically."""
    return sorted(names, key=lambda n: (0, int(n), "") if n.isdigit() else (1, 0, n))


def native_sample_rate(paths: list[Path]) -> int | None:
    """The sample rate every file in ``paths`` shares (read from the headers only), or None when they differ."""
    import soundfile as sf

    rates = set()
    for path in paths:
        try:
            rates.add(int(sf.info(str(path)).samplerate))
        except (sf.LibsndfileError, RuntimeError, OSError) as exc:
            raise DataError(f"cannot read audio file {path}: {exc}; remove or replace it") from None
        if len(rates) > 1:
            return None
    return rates.pop() if rates else None


def scan_audio_folder(root: str | Path, group_pattern: str | None = None) -> list[tuple[Path, str, str]]:
    """(path, label, group) for every audio file under ``root`` in either layout, sorted by path.

    The group is the speaker field of the name, or what regex ``group_pattern`` reads from the path
    relative to ``root`` (e.g. ``'^(?P<group>[^/]+)/'`` for one folder per session).
    """
    root = Path(root)
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise DataError(f"audio folder {root} {what}; pass data.root=<folder of clips>")
    items = []
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS):
        parts = path.stem.split("_")
        if path.parent != root:  # one folder per class
            items.append((path, path.parent.name, parts[1] if len(parts) >= 3 else "unknown"))
        elif len(parts) >= 3:
            items.append((path, parts[0], "_".join(parts[1:-1])))
        else:
            raise DataError(f"cannot tell the label of {path}: name flat files {{label}}_{{speaker}}_{{index}}"
                            f"{path.suffix} or put them in one folder per class")
        if group_pattern is not None:
            items[-1] = items[-1][:2] + (group_of(path.relative_to(root).as_posix(), group_pattern, str(root)),)
    if not items:
        raise DataError(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) under {root}")
    return items


@DATASETS.register("audio_folder", modalities=(AUDIO,))
def audio_folder(root: str, seed: int = 0, sample_rate: int | None = None, clip_seconds: float = 1.0,
                 test_fraction: float = 0.2, split_by_speaker: bool = False, test_groups: list[str] | None = None,
                 group_pattern: str | None = None, limit: int | None = None, cache: str = "memory",
                 on_error: str = "stop") -> DatasetSplits:
    """Labelled clips from a folder (``{label}_{speaker}_{index}.wav`` or one folder per class), resampled.

    ``sample_rate`` None: the files' own rate when they all share one, else 16 kHz;
    ``test_groups``: hold out exactly these speakers/sessions (groups read by ``group_pattern``);
    ``limit``: a class-stratified random sample of that many clips, fixed by ``seed``.
    ``cache="memory"`` reads every clip now; ``"none"`` keeps only the file index and reads each
    batch's clips when it is drawn (in ``data.num_workers`` DataLoader workers).
    """
    items = scan_audio_folder(root, group_pattern)
    classes = _class_order({label for _, label, _ in items})
    if limit:
        labels = torch.tensor([classes.index(label) for _, label, _ in items])
        items = [items[i] for i in stratified_limit(len(items), labels, int(limit), seed).tolist()]
    if sample_rate is None:  # the files' own rate when they agree; mixed rates are resampled to 16 kHz
        sample_rate = native_sample_rate([p for p, _, _ in items]) or DEFAULT_SAMPLE_RATE
    waves = AudioFiles([path for path, _, _ in items], sample_rate, int(round(clip_seconds * sample_rate)))
    labels = torch.tensor([classes.index(label) for _, label, _ in items])
    full = ArrayDataset({AUDIO: waves}, labels, classes, f"audio_folder:{root}", groups=[s for _, _, s in items])
    if test_groups:
        train_set, test_set = split_dataset(full, test_fraction, seed, test_groups)
        return DatasetSplits(train_set, test_set, {"sample_rate": sample_rate}).cached(cache, on_error)
    if split_by_speaker:
        speakers = sorted({s for _, _, s in items})
        if len(speakers) < 2:
            raise DataError(f"split_by_speaker needs ≥ 2 speakers in {root}, found {speakers}")
        g = torch.Generator().manual_seed(seed)
        k = min(len(speakers) - 1, max(1, int(round(len(speakers) * test_fraction))))
        held = {speakers[i] for i in torch.randperm(len(speakers), generator=g)[:k].tolist()}
        is_test = torch.tensor([s in held for _, _, s in items])
        train, test = torch.nonzero(~is_test).flatten(), torch.nonzero(is_test).flatten()
    else:
        train, test = split_indices(len(full), test_fraction, seed, labels)
    return DatasetSplits(full.subset(train, f"audio_folder:{root}/train"), full.subset(test, f"audio_folder:{root}/test"),
                         {"sample_rate": sample_rate}).cached(cache, on_error)


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
        return fit_length(read_audio(self.paths[row].decode(), self.sample_rate), self.samples)
