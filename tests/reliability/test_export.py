"""`mmssl export`: safetensors + config.json, rebuilt by `load_encoders` with identical outputs."""

import json

import pytest
import torch
from safetensors.torch import load_file

from mmssl import checkpoint
from mmssl.build import build_model
from mmssl.cli import main
from mmssl.inference import load_encoders
from tests.conftest import tiny_overrides


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("export") / "run"
    assert main(["pretrain", *tiny_overrides(run)]) == 0
    return run


def test_export_roundtrip_identical_outputs(run_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["export", str(run_dir), "--out", str(out)]) == 0
    assert "image.safetensors" in capsys.readouterr().out
    meta = json.loads((out / "config.json").read_text())
    assert meta["encoders"]["image"] == {"name": "convnet", "in_channels": 1, "width": 4}
    assert meta["step"] == 6
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "image.safetensors"]
    # the exported tensors are exactly the trained encoder's (no pickle involved in reading them)
    path, state = checkpoint.latest(run_dir / "checkpoints")
    from omegaconf import OmegaConf

    model = build_model(OmegaConf.create(state["config"]))
    model.load_state_dict(state["model"])
    model.eval()
    tensors = load_file(str(out / "image.safetensors"))
    assert tensors.keys() == model.encoders["image"].state_dict().keys()
    encoders = load_encoders(out)
    assert list(encoders) == ["image"] and not encoders["image"].training
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        expected, got = model.encoders["image"](x), encoders["image"](x)
    assert torch.equal(expected.pooled, got.pooled) and torch.equal(expected.tokens, got.tokens)


def test_export_from_checkpoint_file(run_dir, tmp_path):
    first = checkpoint.checkpoints(run_dir / "checkpoints")[0]
    assert main(["export", str(first), "--out", str(tmp_path / "e")]) == 0
    assert json.loads((tmp_path / "e" / "config.json").read_text())["step"] == 3


def test_refuses_non_empty_out_without_force(run_dir, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["export", str(run_dir), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "--force" in err and "\n" not in err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # nothing written
    assert main(["export", str(run_dir), "--out", str(out), "--force"]) == 0
    assert (out / "image.safetensors").exists() and (out / "notes.txt").read_text() == "mine"


def test_load_encoders_rejects_broken_exports(run_dir, tmp_path):
    from mmssl.errors import MMSSLError

    out = tmp_path / "out"
    main(["export", str(run_dir), "--out", str(out)])
    data = (out / "image.safetensors").read_bytes()
    (out / "image.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(MMSSLError, match="cannot read .*image.safetensors"):
        load_encoders(out)
    meta = json.loads((out / "config.json").read_text())
    meta["encoders"]["image"]["width"] = 8  # spec and weights disagree
    (out / "config.json").write_text(json.dumps(meta))
    (out / "image.safetensors").write_bytes(data)
    with pytest.raises(MMSSLError, match="does not fit this architecture: .*shape-mismatched"):
        load_encoders(out)
    with pytest.raises(MMSSLError, match="missing or unreadable"):
        load_encoders(tmp_path / "nowhere")
