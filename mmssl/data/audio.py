"""``audio_folder``: your own labelled clips, read with soundfile and resampled to one rate.

Two layouts: flat files named ``{label}_{speaker}_{index}.{wav,flac,ogg}`` (the Free Spoken Digit
Dataset's convention, and what ``synth_speech`` writes), or one sub-folder per class (any file names;
the speaker is the name's second ``_`` field when there is one). Clips are mixed to mono, resampled
to ``sample_rate`` and centred/cropped to ``clip_seconds``. ``split_by_speaker`` holds out whole
speakers for the test split (generalisation to unseen voices); otherwise the split is stratified by class.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mmssl.data.base import ArrayDataset, DatasetSplits, split_indices
from mmssl.errors import DataError
from mmssl.registry import DATASETS
from mmssl.types import AUDIO

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")


def read_audio(path: str | Path, sample_rate: int | None = None) -> torch.Tensor:
    """One clip as a mono float32 (samples,) tensor, resampled to ``sample_rate`` when given.

    Unreadable, corrupt or empty files raise ``DataError`` naming the file.
    """
    import soundfile as sf
    import torchaudio.functional as AF

    p = Path(path)
    if not p.is_file():
        raise DataError(f"audio file {p} {'is a folder, not a file' if p.is_dir() else 'does not exist'}; fix the path")
    if p.stat().st_size == 0:
        raise DataError(f"audio file {p} is empty (0 bytes); remove or replace it")
    try:
        wave, sr = sf.read(str(path), dtype="float32", always_2d=True)
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


def _class_order(names: set[str]) -> list[str]:
    """Numeric labels sort as numbers ("2" before "10"), others alphabetically."""
    return sorted(names, key=lambda n: (0, int(n), "") if n.isdigit() else (1, 0, n))


def scan_audio_folder(root: str | Path) -> list[tuple[Path, str, str]]:
    """(path, label, speaker) for every audio file under ``root`` in either layout, sorted by path."""
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
    if not items:
        raise DataError(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) under {root}")
    return items


@DATASETS.register("audio_folder", modalities=(AUDIO,))
def audio_folder(root: str, seed: int = 0, sample_rate: int = 16000, clip_seconds: float = 1.0,
                 test_fraction: float = 0.2, split_by_speaker: bool = False) -> DatasetSplits:
    """Labelled clips from a folder (``{label}_{speaker}_{index}.wav`` or one folder per class), resampled."""
    from mmssl.data.trimodal import fit_length

    items = scan_audio_folder(root)
    classes = _class_order({label for _, label, _ in items})
    samples = int(round(clip_seconds * sample_rate))
    waves = torch.stack([fit_length(read_audio(path, sample_rate), samples) for path, _, _ in items])
    labels = torch.tensor([classes.index(label) for _, label, _ in items])
    full = ArrayDataset({AUDIO: waves}, labels, classes, f"audio_folder:{root}")
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
                         {"sample_rate": sample_rate})
