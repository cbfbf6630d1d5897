"""``trimodal_digits``: each item is a handwritten digit image, a spoken digit of the same class and a text.

- image: scikit-learn's 8×8 digits, uint8 (N, 1, 8, 8), split stratified by class (held-out images);
- audio: a synthesised clip of the same digit word (``python -m mmssl.data.synth_speech``; the
  committed set lives in ``assets/spoken_digits``), float (N, samples) at ``sample_rate``, centred in
  a fixed ``clip_seconds`` window. Test items use only speakers (voices) never heard in training;
- text: a prompt naming the class ("seven", "7", "a handwritten seven", …) as open_clip BPE ids (N, L).

Pairing is by class and seeded: image i gets a random clip and a random prompt of its label from its
split, so an item is a (weakly) paired triple, as in ImageBind's image-anchored data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mmssl.data.base import ArrayDataset, DatasetSplits, split_indices
from mmssl.data.images import DIGIT_NAMES
from mmssl.errors import DataError
from mmssl.registry import DATASETS
from mmssl.types import AUDIO, IMAGE, TEXT

SPOKEN_DIGITS_DIR = Path(__file__).parent / "assets" / "spoken_digits"
#: prompt templates: {w} is the digit word, {d} the numeral
PROMPTS = ["{w}", "{d}", "a handwritten {w}", "the digit {w}", "the number {d}", "a {w}", "digit {d}",
           "the number {w}", "a drawing of a {w}", "a spoken {w}"]


def class_prompts(template: str = "a handwritten {w}", classes: list[str] = DIGIT_NAMES) -> list[str]:
    """One prompt per class (zero-shot classification)."""
    return [template.format(w=w, d=i) for i, w in enumerate(classes)]


def load_spoken_digits(root: str | Path = SPOKEN_DIGITS_DIR, sample_rate: int = 8000,
                       clip_seconds: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Every clip listed in ``root/manifest.csv`` → waves (M, samples), labels (M,), speakers (M,)."""
    from mmssl.data.audio import fit_length, read_audio

    root = Path(root)
    manifest = root / "manifest.csv"
    if not manifest.is_file():
        raise DataError(f"{manifest} not found; run `python -m mmssl.data.synth_speech --out {root}`")
    from mmssl.data.manifest import confined, read_rows

    rows = read_rows(manifest)
    if not rows:
        raise DataError(f"{manifest} lists no clips; regenerate it with `python -m mmssl.data.synth_speech`")
    for number, r in enumerate(rows, 1):
        if any(r.get(k) in (None, "") for k in ("file", "label", "speaker")) or not str(r["label"]).isdigit():
            raise DataError(f"{manifest} row {number} needs file, label (a digit) and speaker, got {dict(r)}; "
                            "regenerate it with `python -m mmssl.data.synth_speech`")
    samples = int(round(clip_seconds * sample_rate))
    files = [confined(manifest, r["file"], n, "file") for n, r in enumerate(rows, 1)]
    waves = torch.stack([fit_length(read_audio(f, sample_rate), samples) for f in files])
    return waves, torch.tensor([int(r["label"]) for r in rows]), [r["speaker"] for r in rows]


@DATASETS.register("trimodal_digits", modalities=(IMAGE, AUDIO, TEXT))
def trimodal_digits(seed: int = 0, test_fraction: float = 0.3, test_speaker_fraction: float = 0.2,
                    sample_rate: int = 8000, clip_seconds: float = 1.0, context_length: int = 16,
                    root: str | None = None) -> DatasetSplits:
    """Digit images + spoken digits (unseen voices at test time) + class prompts, paired by class."""
    from sklearn.datasets import load_digits

    from mmssl.data.tokenize import tokenize

    digits = load_digits()
    images = torch.from_numpy(np.round(digits.images * (255 / 16))).to(torch.uint8).unsqueeze(1)
    labels = torch.from_numpy(digits.target).long()
    waves, clip_labels, speakers = load_spoken_digits(root or SPOKEN_DIGITS_DIR, sample_rate, clip_seconds)
    g = torch.Generator().manual_seed(seed)
    voices = sorted(set(speakers))
    n_test_voices = max(1, int(round(len(voices) * test_speaker_fraction)))
    if n_test_voices >= len(voices):
        raise DataError(f"trimodal_digits needs ≥ 2 speakers to hold some out, found {len(voices)}")
    test_voices = {voices[i] for i in torch.randperm(len(voices), generator=g)[:n_test_voices].tolist()}
    prompts = [[t.format(w=w, d=c) for t in PROMPTS] for c, w in enumerate(DIGIT_NAMES)]
    prompt_ids = tokenize([p for per_class in prompts for p in per_class], context_length).view(10, len(PROMPTS), -1)
    train_idx, test_idx = split_indices(len(images), test_fraction, seed, labels)
    splits = {}
    for split, idx, held_out in (("train", train_idx, False), ("test", test_idx, True)):
        pool = torch.tensor([(s in test_voices) == held_out for s in speakers])
        y = labels[idx]
        clip_of = torch.empty(len(idx), dtype=torch.long)
        for c in range(10):
            mine = torch.nonzero(pool & (clip_labels == c)).flatten()
            rows = torch.nonzero(y == c).flatten()
            if len(mine) == 0:
                raise DataError(f"no {split} clip of digit {c} in {root or SPOKEN_DIGITS_DIR}; regenerate the set")
            clip_of[rows] = mine[torch.randint(len(mine), (len(rows),), generator=g)]
        text = prompt_ids[y, torch.randint(len(PROMPTS), (len(idx),), generator=g)]
        splits[split] = ArrayDataset({IMAGE: images[idx], AUDIO: waves[clip_of], TEXT: text}, y, list(DIGIT_NAMES),
                                     f"trimodal_digits/{split}")
    meta = {"sample_rate": sample_rate, "test_speakers": sorted(test_voices),
            "train_speakers": sorted(set(voices) - test_voices), "prompts": PROMPTS}
    return DatasetSplits(splits["train"], splits["test"], meta)
