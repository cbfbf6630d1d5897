"""End to end through the CLI: a tiny run, its run folder, `mmssl eval`, and one-line errors for bad input."""

import json

import pytest

from mmssl.cli import main
from tests.conftest import tiny_overrides


def test_tiny_pretrain_run_and_eval(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["pretrain", *tiny_overrides(run, "eval.baselines=true")]) == 0
    out = capsys.readouterr().out
    assert "self-supervised encoder" in out and "raw input" in out and "random-init encoder" in out
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "probes.md"):
        assert (run / name).exists(), name
    summary = json.loads((run / "summary.json").read_text())
    assert 0.1 < summary["eval/image/ssl/linear_probe_accuracy"] <= 1.0
    assert summary["train/steps"] == 6
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "train/loss" in r] == [2, 4, 6]
    assert main(["eval", str(run)]) == 0
    assert "self-supervised encoder" in capsys.readouterr().out


def _error(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def test_unknown_objective(capsys, tmp_path):
    err = _error(capsys, ["pretrain", *tiny_overrides(tmp_path / "r"), "objective=simclrr"])
    assert "simclrr" in err and "simclr" in err


def test_bad_override_key(capsys, tmp_path):
    err = _error(capsys, ["pretrain", *tiny_overrides(tmp_path / "r"), "trainer.stepz=3"])
    assert "trainer.stepz" in err and "trainer.steps" in err
    assert not (tmp_path / "r").exists()  # nothing written before the failure


def test_bad_encoder_option(capsys, tmp_path):
    err = _error(capsys, ["pretrain", *tiny_overrides(tmp_path / "r"), "+encoder.image.depth=3"])
    assert "'depth'" in err and "accepted" in err


def test_empty_dataset(capsys, tmp_path):
    (tmp_path / "images" / "cat").mkdir(parents=True)
    err = _error(capsys, ["pretrain", *tiny_overrides(tmp_path / "r"), "data=image_folder",
                          f"data.root={tmp_path / 'images'}"])
    assert "image folder" in err or "empty" in err


def test_wrong_image_shape(capsys, tmp_path):
    err = _error(capsys, ["pretrain", *tiny_overrides(tmp_path / "r"), "encoder.image.in_channels=3"])
    assert "(B, 3, H, W)" in err and "(" in err


@pytest.mark.parametrize("argv", [["eval", "/nonexistent/run"]])
def test_eval_missing_run(capsys, argv):
    assert "no valid checkpoint" in _error(capsys, argv) or "does not exist" in _error(capsys, argv)
