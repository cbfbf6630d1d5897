"""Loaders: audio folders (any rate, corrupt/empty files, speaker splits), manifests, text corpora, trimodal digits."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from mmssl.errors import DataError
from mmssl.registry import DATASETS


def _tone(freq: float, sr: int, seconds: float = 0.5) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * freq * np.arange(int(sr * seconds)) / sr)).astype(np.float32)


def _dominant_hz(wave: torch.Tensor, sr: int) -> float:
    spectrum = torch.fft.rfft(wave).abs()
    return float(spectrum.argmax()) * sr / len(wave)


@pytest.fixture
def flat_folder(tmp_path):
    """Two classes × three speakers, each speaker at a different sample rate; class 0 is 440 Hz, class 1 880 Hz."""
    for speaker, sr in (("ann", 8000), ("bob", 22050), ("cyd", 44100)):
        for label, freq in ((0, 440.0), (1, 880.0)):
            for i in range(2):
                sf.write(tmp_path / f"{label}_{speaker}_{i}.wav", _tone(freq, sr), sr)
    return tmp_path


def test_audio_folder_resamples_every_rate(flat_folder):
    splits = DATASETS.build("audio_folder", root=str(flat_folder), sample_rate=16000, clip_seconds=1.0,
                            test_fraction=0.5)
    both = torch.cat([splits.train.data["audio"], splits.test.data["audio"]])
    labels = torch.cat([splits.train.labels, splits.test.labels])
    assert both.shape == (12, 16000) and splits.train.classes == ["0", "1"]
    for wave, label in zip(both, labels):  # the pitch survives resampling from 8k/22.05k/44.1k to 16k
        assert abs(_dominant_hz(wave, 16000) - (440.0, 880.0)[int(label)]) < 5


def test_audio_folder_split_by_speaker(flat_folder):
    splits = DATASETS.build("audio_folder", root=str(flat_folder), sample_rate=8000, split_by_speaker=True,
                            test_fraction=0.34)
    assert len(splits.test) == 4 and len(splits.train) == 8  # one of three speakers held out, all 4 of its clips


def test_audio_folder_class_subfolders(tmp_path):
    for cls in ("dog", "cat"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            sf.write(tmp_path / cls / f"clip{i}.flac", _tone(300.0, 16000), 16000)
    splits = DATASETS.build("audio_folder", root=str(tmp_path), test_fraction=0.34)
    assert splits.train.classes == ["cat", "dog"] and len(splits.train) + len(splits.test) == 6


def test_audio_folder_corrupt_and_empty_files(flat_folder):
    bad = flat_folder / "1_dan_0.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    with pytest.raises(DataError, match="1_dan_0.wav"):
        DATASETS.build("audio_folder", root=str(flat_folder))
    bad.unlink()
    sf.write(flat_folder / "0_eve_0.wav", np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(DataError, match=r"0_eve_0.wav is empty"):
        DATASETS.build("audio_folder", root=str(flat_folder))


def test_audio_folder_unlabelled_name_and_missing_folder(tmp_path):
    sf.write(tmp_path / "noise.wav", _tone(100.0, 8000), 8000)
    with pytest.raises(DataError, match="cannot tell the label of .*noise.wav"):
        DATASETS.build("audio_folder", root=str(tmp_path))
    with pytest.raises(DataError, match="does not exist"):
        DATASETS.build("audio_folder", root=str(tmp_path / "nope"))


@pytest.fixture
def manifest_dir(tmp_path):
    rows = []
    for i in range(6):
        Image.fromarray(np.full((10, 10), 40 * i, dtype=np.uint8)).save(tmp_path / f"img{i}.png")
        sf.write(tmp_path / f"a{i}.wav", _tone(200.0 + 100 * i, 8000), 8000)
        rows.append({"image": f"img{i}.png", "audio": f"a{i}.wav", "text": f"item number {i}", "label": str(i % 2)})
    return tmp_path, rows


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_manifest_loads_every_modality(manifest_dir, fmt):
    root, rows = manifest_dir
    path = root / f"m.{fmt}"
    if fmt == "csv":
        path.write_text("image,audio,text,label\n" + "".join(",".join(r.values()) + "\n" for r in rows))
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    s = DATASETS.build("manifest", path=str(path), image_size=8, sample_rate=8000, context_length=8, test_fraction=0.34)
    full = {k: torch.cat([s.train.data[k], s.test.data[k]]) for k in ("image", "audio", "text")}
    assert full["image"].shape == (6, 1, 8, 8) and full["image"].dtype == torch.uint8
    assert full["audio"].shape == (6, 8000) and full["text"].shape == (6, 8)
    assert s.train.classes == ["0", "1"] and len(s.test) == 2


def test_manifest_row_missing_a_modality(manifest_dir):
    root, rows = manifest_dir
    rows[3]["audio"] = ""
    path = root / "m.csv"
    path.write_text("image,audio,text,label\n" + "".join(",".join(r.values()) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"row 4 has no \['audio'\]"):
        DATASETS.build("manifest", path=str(path))
    del rows[3]["audio"]
    jpath = root / "m.jsonl"
    jpath.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"row 4 has no \['audio'\]"):
        DATASETS.build("manifest", path=str(jpath))


def test_text_corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("pos\tgreat film\n\nneg\tdull plot\npos\tloved it\nneg\tboring\n")
    s = DATASETS.build("text_corpus", path=str(path), context_length=8, label_separator="\t", test_fraction=0.5)
    assert s.train.classes == ["neg", "pos"] and len(s.train) + len(s.test) == 4
    assert s.train.data["text"].shape[1] == 8
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(DataError, match="no non-blank lines"):
        DATASETS.build("text_corpus", path=str(tmp_path / "empty.txt"))


@pytest.fixture(scope="module")
def trimodal():
    return DATASETS.build("trimodal_digits", seed=0)


def test_trimodal_digits_layout(trimodal):
    for split in (trimodal.train, trimodal.test):
        assert split.data["image"].dtype == torch.uint8 and split.data["image"].shape[1:] == (1, 8, 8)
        assert split.data["audio"].shape[1:] == (8000,) and split.data["audio"].dtype == torch.float32
        assert split.data["text"].shape[1:] == (16,) and split.data["text"].dtype == torch.int64
        assert split.classes[7] == "seven"
    assert len(trimodal.train) + len(trimodal.test) == 1797


def test_trimodal_digits_unseen_voices_and_class_pairing(trimodal):
    from mmssl.data.tokenize import tokenize
    from mmssl.data.trimodal import load_spoken_digits

    assert not set(trimodal.meta["test_speakers"]) & set(trimodal.meta["train_speakers"])
    from mmssl.data.trimodal import PROMPTS

    waves, clip_labels, speakers = load_spoken_digits()
    probe = torch.randn(waves.shape[1], dtype=torch.float64)
    clip_keys = waves.double() @ probe  # a fingerprint per clip
    for split, voices in ((trimodal.train, trimodal.meta["train_speakers"]), (trimodal.test, trimodal.meta["test_speakers"])):
        keys = split.data["audio"].double() @ probe
        clip = (keys[:, None] - clip_keys[None]).abs().argmin(1)  # which stored clip each item holds
        assert torch.equal(split.data["audio"], waves[clip])
        assert torch.equal(clip_labels[clip], split.labels)  # the spoken digit is the image's class
        assert {speakers[int(c)] for c in clip} <= set(voices)  # test items speak only with unseen voices
    sevens = tokenize([t.format(w="seven", d=7) for t in PROMPTS], 16)
    seven_rows = trimodal.test.data["text"][trimodal.test.labels == 7]
    assert (seven_rows[:, None] == sevens[None]).all(-1).any(1).all()  # every text of a seven is a seven prompt


def test_trimodal_digits_is_seeded():
    a, b = DATASETS.build("trimodal_digits", seed=1), DATASETS.build("trimodal_digits", seed=1)
    assert torch.equal(a.test.data["audio"], b.test.data["audio"]) and torch.equal(a.test.data["text"], b.test.data["text"])
