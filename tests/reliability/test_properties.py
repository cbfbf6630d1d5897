"""Property-based layer (hypothesis) over config overrides and manifest / audio / image inputs.

Two invariants, whatever the input: the command either succeeds or ends in exactly one ``error: …`` line
(an ``MMSSLError`` whose message is one line, never a traceback), and no file that existed before is
changed. Seeded (``derandomize``), no example database, small ``max_examples``: the file runs in well
under a minute on one core.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import tempfile
import wave
import zlib
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmssl import constraints
from mmssl.cli import main
from mmssl.config import compose_keys
from mmssl.errors import MMSSLError
from mmssl.registry import DATASETS

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.filter_too_much])
CONFIG_SETTINGS = settings(SETTINGS, max_examples=20)  # each example composes the config (≈ 0.2 s of CPU)


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _one_line_or_success(run) -> str | None:
    """Run ``run()``; None on success, else the message of the MMSSLError it raised (asserted one line)."""
    try:
        run()
    except MMSSLError as exc:
        message = str(exc)
        assert message and "\n" not in message, f"multi-line error: {message!r}"
        assert "Traceback" not in message and "weights_only=False" not in message
        return message
    return None


# -- config overrides through the CLI -------------------------------------------------------------------------

PRETRAIN_KEYS = [k for k in compose_keys("pretrain") if k.count(".") >= 1 and not k.startswith("hydra")]
TOP_KEYS = ["seed", "resume", "device", "threads", "run_dir"]
GROUPS = {"objective": ["simclr", "byol", "vicreg", "simclrr", "moco_v3"], "encoder": ["convnet", "resnet18", "nope"],
          "data": ["digits", "fashion_mnist", "mnist"], "trainer": ["default"]}

numbers = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True, width=32),
                    st.sampled_from([0, 1, -1, 0.5, 1e-9, 1e9]))
texts = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)
values = st.one_of(numbers.map(repr), st.sampled_from(["true", "false", "null", "[]", "[1,2]", "{a: 1}", "''",
                                                       "abc", "${oc.env:HOME}", "[1,", "a=b", "x y", "'q'"]),
                   texts)


@st.composite
def override(draw):
    kind = draw(st.sampled_from(["value", "value", "value", "group", "add", "delete", "unknown"]))
    if kind == "group":
        group = draw(st.sampled_from(sorted(GROUPS)))
        return f"{group}={draw(st.sampled_from(GROUPS[group]))}"
    key = draw(st.sampled_from(PRETRAIN_KEYS + TOP_KEYS))
    if kind == "delete":
        return f"~{key}"
    if kind == "unknown":
        key = key + draw(st.sampled_from(["x", "_", "s"]))
    return f"{'+' if kind == 'add' else ''}{key}={draw(values)}"


@CONFIG_SETTINGS
@given(overrides=st.lists(override(), min_size=1, max_size=4))
def test_any_overrides_give_success_or_one_error_line(overrides, monkeypatch, capsys):
    """`mmssl pretrain <overrides>` with the training replaced by a check of the composed config."""
    import mmssl.train.pretrain as pretrain

    composed = []

    def fake_run(cfg):
        from omegaconf import OmegaConf

        data = OmegaConf.to_container(cfg, resolve=True)
        for path, value in constraints.leaves(data):  # whatever composes fits every range
            rule = constraints.rule_for(path)
            for v in value if isinstance(value, list) else [value]:
                if rule is not None and v is not None and isinstance(v, int | float) and not isinstance(v, bool):
                    assert rule.problem(v) is None, (path, v)
        composed.append(cfg)

    monkeypatch.setattr(pretrain, "run", fake_run)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "existing.txt").write_text("keep me")
        monkeypatch.chdir(root)
        before = _digest(root)
        code = main(["pretrain", f"run_dir={root / 'run'}", *overrides])
        err = capsys.readouterr().err.strip().splitlines()
        errors = [line for line in err if line.startswith("error:")]
        if code == 0:
            assert not errors and len(composed) == 1
        else:
            assert code == 2 and len(errors) == 1 and err[-1] == errors[0], err
            assert "Traceback" not in "\n".join(err)
        assert _digest(root) == before and not (root / "run").exists()


@CONFIG_SETTINGS
@given(key=st.sampled_from([p for p in PRETRAIN_KEYS if constraints.rule_for(p) is not None]), value=numbers)
def test_a_number_out_of_range_is_refused_naming_the_override(key, value):
    from mmssl.config import compose

    text = f"{key}={value!r}"
    message = _one_line_or_success(lambda: compose("pretrain", [text]))
    if constraints.rule_for(key).problem(value) is not None:
        assert message is not None, f"{text} composed although {key} {constraints.rule_for(key).problem(value)}"
        assert repr(text) in message or key in message, message


# -- manifests, images, audio -------------------------------------------------------------------------------

def png_bytes(width: int, height: int, payload: bytes | None = None) -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = payload if payload is not None else b"".join(b"\x00" + bytes(width) for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return buf.getvalue()


images = st.one_of(
    st.builds(png_bytes, st.integers(1, 16), st.integers(1, 16)),  # good
    st.builds(lambda w, h: png_bytes(w, h, b"\x00"), st.integers(1, 100_000), st.integers(1, 100_000)),  # bombs
    st.binary(max_size=64),  # junk and empty files
    st.builds(lambda w, n: png_bytes(w, w)[:n], st.integers(2, 16), st.integers(0, 80)),  # truncated
)
audios = st.one_of(
    st.builds(lambda n, r: wav_bytes(np.sin(np.arange(n) / 7.0), r), st.integers(0, 2000),
              st.sampled_from([8000, 16000, 44100, 1])),
    st.binary(max_size=64),
    st.builds(lambda n: wav_bytes(np.zeros(4), 8000)[:n], st.integers(0, 60)),
)
path_cells = st.one_of(st.sampled_from(["f0", "f1", "f2", "../outside", "/etc/hostname", "missing", "", "sub/../f0",
                                        ".", "..", "f0\x00"]),
                       st.integers(), st.none(), st.lists(st.just("f0"), max_size=1), texts)


@st.composite
def manifest_case(draw):
    column = draw(st.sampled_from(["image", "audio"]))
    files = {f"f{i}": draw(images if column == "image" else audios) for i in range(3)}
    rows = draw(st.lists(st.fixed_dictionaries({column: path_cells, "label": st.one_of(st.integers(0, 2), texts)}),
                         min_size=1, max_size=5))
    fmt = draw(st.sampled_from(["jsonl", "csv"]))
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "latin-1", "utf-16"]))
    return column, files, rows, fmt, encoding


def _write_manifest(root: Path, column, files, rows, fmt, encoding) -> Path:
    ext = {"image": ".png", "audio": ".wav"}[column]
    for name, data in files.items():
        (root / f"{name}{ext}").write_bytes(data)
    cells = [{**r, column: f"{r[column]}{ext}" if isinstance(r[column], str) and r[column].startswith("f")
              else r[column]} for r in rows]
    if fmt == "jsonl":
        text = "\n".join(json.dumps(r) for r in cells)
    else:
        text = "\n".join([f"{column},label", *(f"{r[column]},{r['label']}" for r in cells)])
    path = root / f"items.{fmt}"
    try:
        path.write_bytes(text.encode(encoding, errors="replace"))
    except UnicodeEncodeError:
        path.write_bytes(text.encode("utf-8", errors="replace"))
    return path


@SETTINGS
@given(case=manifest_case())
def test_any_manifest_loads_or_fails_in_one_line_naming_a_file(case):
    column, files, rows, fmt, encoding = case
    with tempfile.TemporaryDirectory() as tmp:
        outer = Path(tmp)
        (outer / "outside.png").write_bytes(png_bytes(4, 4))
        (outer / "outside.wav").write_bytes(wav_bytes(np.zeros(100), 8000))
        root = outer / "m"
        root.mkdir()
        path = _write_manifest(root, column, files, rows, fmt, encoding)
        before = _digest(outer)
        message = _one_line_or_success(lambda: DATASETS.build(
            "manifest", path=str(path), image_size=4, sample_rate=8000, clip_seconds=0.05, test_fraction=0.5,
            max_pixels=100_000))
        if message is not None:
            assert str(root) in message or "test_fraction" in message or "empty" in message, message
        assert _digest(outer) == before


@SETTINGS
@given(data=audios)
def test_any_audio_file_reads_finite_or_fails_in_one_line(data):
    from mmssl.data.audio import read_audio

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip.wav"
        path.write_bytes(data)
        out = []
        message = _one_line_or_success(lambda: out.append(read_audio(path, 8000)))
        if message is None:
            assert out[0].ndim == 1 and out[0].numel() > 0 and bool(out[0].isfinite().all())
        else:
            assert str(path) in message
        assert path.read_bytes() == data


@SETTINGS
@given(data=images, limit=st.sampled_from([64, 10_000, 1_000_000]))
def test_any_image_file_decodes_within_the_limit_or_fails_in_one_line(data, limit):
    from mmssl.data.images import open_image

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "img.png"
        path.write_bytes(data)
        out = []
        message = _one_line_or_success(lambda: out.append(open_image(path, limit)))
        if message is None:
            assert out[0].size[0] * out[0].size[1] <= limit
        else:
            assert str(path) in message
        assert path.read_bytes() == data
