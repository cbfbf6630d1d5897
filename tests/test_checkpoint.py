"""`checkpoint.find`: the one lookup of a run's checkpoint (run folder, its checkpoints/, or a file)."""

import pytest
import torch
from torch import nn

from mmssl import checkpoint
from mmssl.errors import ConfigError
from mmssl.rl.agent import load_pretrained


def _run(tmp_path, steps=(3, 6)):
    run = tmp_path / "run"
    for step in steps:
        checkpoint.save({"step": step, "model": {"encoders.image.weight": torch.full((2, 3), float(step)),
                                                 "encoders.image.bias": torch.zeros(2),
                                                 "encoders.text.weight": torch.ones(1)}},
                        run / "checkpoints" / f"step_{step:08d}.pt")
    return run


def test_a_run_folder_gives_its_newest_checkpoint(tmp_path):
    run = _run(tmp_path)
    run_dir, path, state = checkpoint.find(run)
    assert (run_dir, path.name, state["step"]) == (run, "step_00000006.pt", 6)


def test_a_checkpoint_file_gives_the_run_folder_above_checkpoints(tmp_path):
    run = _run(tmp_path)
    run_dir, path, state = checkpoint.find(run / "checkpoints" / "step_00000003.pt")
    assert (run_dir, state["step"]) == (run, 3)
    loose = checkpoint.save({"step": 1}, tmp_path / "loose" / "step_00000001.pt")
    assert checkpoint.find(loose)[0] == tmp_path / "loose"


def test_a_damaged_newest_checkpoint_falls_back(tmp_path):
    run = _run(tmp_path)
    (run / "checkpoints" / "step_00000006.pt").write_bytes(b"torn")
    with pytest.warns(UserWarning, match="falling back"):
        assert checkpoint.find(run)[2]["step"] == 3


def test_missing_or_empty_says_what_to_pass(tmp_path):
    with pytest.raises(ConfigError, match=r"does not exist; pass a pretraining run folder or a step_\*\.pt file"):
        checkpoint.find(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no valid checkpoint in .*; pass an export"):
        checkpoint.find(tmp_path / "empty", accepts="an export")


def test_encoder_weights_strip_the_prefix_of_one_modality(tmp_path):
    state = checkpoint.find(_run(tmp_path))[2]["model"]
    assert sorted(checkpoint.encoder_weights(state, "image")) == ["bias", "weight"]
    assert checkpoint.encoder_weights(state, "audio") == {}


def test_an_rl_encoder_loads_from_a_run_folder(tmp_path):
    encoder = nn.Linear(3, 2)
    load_pretrained(encoder, str(_run(tmp_path)), "image")
    assert torch.equal(encoder.weight, torch.full((2, 3), 6.0))
