"""Every input file error is one line naming the file: manifest encodings and cells, paths leaving the
manifest's folder, decompression bombs, empty/unreadable audio, every path a loader meets."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import re
import struct
import zlib

import numpy as np
import pytest

from mmssl.cli import main
from mmssl.errors import DataError
from mmssl.registry import DATASETS
from tests.conftest import tiny_overrides


def png(path: pathlib.Path, value: int = 100, size: int = 8) -> pathlib.Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), value, np.uint8)).save(path)
    return path


def wav(path: pathlib.Path, samples: int = 800) -> pathlib.Path:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.sin(np.linspace(0, 50, samples)).astype(np.float32) / 4, 8000)
    return path


def bomb_png(path: pathlib.Path, width: int = 30000, height: int = 30000) -> pathlib.Path:
    """A ~1 KB PNG whose header claims width×height grey pixels (the IDAT is a tiny stream: never decoded here)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                     + chunk(b"IEND", b""))
    return path


def manifest_csv(tmp: pathlib.Path, rows: list[str], header: str = "image,label", encoding="utf-8", bom=False):
    root = tmp / "m"
    for i in range(4):
        png(root / f"{i}.png", 40 * i)
    path = root / "items.csv"
    text = "\n".join([header, *rows]) + "\n"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode(encoding))
    return path


GOOD_ROWS = ["0.png,a", "1.png,b", "2.png,a", "3.png,b"]


def build(path, **kwargs):
    return DATASETS.build("manifest", path=str(path), image_size=8, test_fraction=0.5, **kwargs)


def test_utf8_bom_manifest_is_read(tmp_path):
    path = manifest_csv(tmp_path, GOOD_ROWS, bom=True)
    splits = build(path)  # before: the BOM became part of the first column name ("\ufeffimage") → "no columns"
    assert len(splits.train) + len(splits.test) == 4 and splits.train.classes == ["a", "b"]


def test_latin1_manifest_is_one_line_naming_the_file(tmp_path):
    path = manifest_csv(tmp_path, [*GOOD_ROWS[:3], "3.png,café"], encoding="latin-1")
    with pytest.raises(DataError, match=r"items\.csv is not UTF-8 \(byte 0xe9.*save it as UTF-8"):
        build(path)


@pytest.mark.parametrize("cell", [3, None, ["0.png"], {"p": "0.png"}, True])
def test_non_string_path_in_jsonl_manifest(tmp_path, cell):
    root = tmp_path / "m"
    png(root / "0.png")
    path = root / "items.jsonl"
    rows = [{"image": "0.png", "label": 0}, {"image": cell, "label": 1}, {"image": "0.png", "label": 1}]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    expect = "row 2 has no" if cell is None else "row 2: image must be a path string"
    with pytest.raises(DataError, match=expect) as info:
        build(path)
    assert "items.jsonl" in str(info.value)


def test_jsonl_line_that_is_not_an_object(tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_text('{"text": "a", "label": 1}\n[1, 2]\n')
    with pytest.raises(DataError, match=r"items\.jsonl line 2 is a JSON list, not an object"):
        build(path)


@pytest.mark.parametrize("cell", ["../outside.png", "sub/../../outside.png", "ABS"])
def test_manifest_paths_are_confined_to_its_folder(tmp_path, cell):
    outside = png(tmp_path / "outside.png")
    cell = str(outside) if cell == "ABS" else cell
    path = manifest_csv(tmp_path, [*GOOD_ROWS[:3], f"{cell},b"])
    (path.parent / "sub").mkdir()
    with pytest.raises(DataError) as info:
        build(path)
    message = str(info.value)
    assert "row 4" in message and repr(cell) in message and str(outside) in message
    assert "outside the manifest's folder" in message and "data.allow_outside_root=true" in message
    splits = build(path, allow_outside_root=True)  # the explicit opt-in reads it
    assert len(splits.train) + len(splits.test) == 4


def test_symlink_out_of_the_manifest_folder_is_an_escape(tmp_path):
    outside = png(tmp_path / "elsewhere" / "x.png")
    path = manifest_csv(tmp_path, [*GOOD_ROWS[:3], "link.png,b"])
    os.symlink(outside, path.parent / "link.png")
    with pytest.raises(DataError, match="link.png.*outside the manifest's folder"):
        build(path)


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    path = manifest_csv(tmp_path, [*GOOD_ROWS[:3], "bomb.png,b"])
    bomb_png(path.parent / "bomb.png")
    with pytest.raises(DataError, match=r"bomb\.png is 30000×30000 = 900,000,000 pixels, over the limit of 50,000,000"):
        build(path)


def test_pixel_limit_is_configurable(tmp_path):
    path = manifest_csv(tmp_path, GOOD_ROWS)
    png(path.parent / "0.png", size=64)
    with pytest.raises(DataError, match=r"0\.png is 64×64 = 4,096 pixels, over the limit of 1,000.*data.max_pixels"):
        build(path, max_pixels=1000)
    assert len(build(path, max_pixels=None).train) == 2


def test_image_folder_bomb_and_limit(tmp_path):
    root = tmp_path / "images"
    for label in ("a", "b"):
        for i in range(2):
            png(root / label / f"{i}.png")
    bomb_png(root / "b" / "big.png")
    with pytest.raises(DataError, match=r"big\.png is 30000×30000.*data.max_pixels"):
        DATASETS.build("image_folder", root=str(root), size=8, test_fraction=0.5)


def test_truncated_image_in_manifest(tmp_path):
    path = manifest_csv(tmp_path, GOOD_ROWS)
    good = (path.parent / "1.png").read_bytes()
    (path.parent / "1.png").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match=r"(cannot read|corrupt) image .*1\.png"):
        build(path)


@pytest.mark.parametrize("damage", ["zero-bytes", "folder", "missing", "broken-link"])
def test_unreadable_audio_in_manifest(tmp_path, damage):
    root = tmp_path / "m"
    wav(root / "a.wav")
    bad = root / "b.wav"
    if damage == "zero-bytes":
        bad.write_bytes(b"")
    elif damage == "folder":
        bad.mkdir()
    elif damage == "broken-link":
        os.symlink(root / "gone.wav", bad)
    path = root / "items.csv"
    path.write_text("audio,label\na.wav,0\nb.wav,1\na.wav,1\na.wav,0\n")
    expect = {"zero-bytes": "is empty (0 bytes)", "folder": "is a folder", "missing": "does not exist",
              "broken-link": "does not exist"}[damage]
    with pytest.raises(DataError, match=rf"audio file .*b\.wav {re.escape(expect)}"):
        DATASETS.build("manifest", path=str(path), sample_rate=8000, clip_seconds=0.1, test_fraction=0.5)


def test_manifest_is_a_folder_or_missing(tmp_path):
    with pytest.raises(DataError, match="is a folder"):
        build(tmp_path)
    with pytest.raises(DataError, match=r"cannot read manifest .*nope\.csv"):
        build(tmp_path / "nope.csv")


def test_text_corpus_bom_and_latin1(tmp_path):
    good = tmp_path / "bom.txt"
    good.write_bytes(b"\xef\xbb\xbf" + b"a\tfirst line\nb\tsecond\na\tthird\nb\tfourth\n")
    splits = DATASETS.build("text_corpus", path=str(good), label_separator="\t", test_fraction=0.5)
    assert splits.train.classes == ["a", "b"]  # before: the BOM made the first label "\ufeffa", a third class
    bad = tmp_path / "latin.txt"
    bad.write_bytes("caf\xe9\nthé\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin\.txt is not UTF-8"):
        DATASETS.build("text_corpus", path=str(bad))


def test_spoken_digit_manifest_rows_and_escapes(tmp_path):
    from mmssl.data.trimodal import load_spoken_digits

    wav(tmp_path / "0_a_0.wav")
    (tmp_path / "manifest.csv").write_text("file,label,speaker\n0_a_0.wav,zero,a\n")
    with pytest.raises(DataError, match=r"manifest\.csv row 1 needs file, label \(a digit\)"):
        load_spoken_digits(tmp_path)
    wav(tmp_path.parent / "escape.wav")
    (tmp_path / "manifest.csv").write_text("file,label,speaker\n../escape.wav,0,a\n")
    with pytest.raises(DataError, match="outside the manifest's folder"):
        load_spoken_digits(tmp_path)


def _files(root):
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_cli_escape_is_one_line_and_nothing_is_written(tmp_path, capsys):
    path = manifest_csv(tmp_path, [*GOOD_ROWS[:3], "../../etc/passwd,b"])
    before = _files(tmp_path)
    code = main(["pretrain", *tiny_overrides(tmp_path / "run", "data=manifest", f"data.path={path}",
                                              "data.image_size=8")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len([e for e in err if e.startswith("error:")]) == 1, err
    assert "'../../etc/passwd'" in err[-1] and "items.csv" in err[-1] and "allow_outside_root" in err[-1]
    assert _files(tmp_path) == before and not (tmp_path / "run").exists()
