"""The flagship study's commands compose into valid configs (every key exists, every group option too)."""

import importlib.util
from pathlib import Path

import pytest

from mmssl.config import compose

RUNNER = Path(__file__).parents[2] / "experiments" / "flagship" / "run.py"
spec = importlib.util.spec_from_file_location("flagship_run", RUNNER)
study = importlib.util.module_from_spec(spec)
spec.loader.exec_module(study)


@pytest.mark.parametrize("modality", study.MODALITIES)
@pytest.mark.parametrize("agent", study.AGENTS)
def test_rl_commands_compose(modality, agent):
    cmd = study.rl_command(modality, agent, seed=3, frames=2048, eval_every=2, eval_episodes=10)
    assert cmd[:2] == ["mmssl", "rl"]
    cfg = compose("rl", cmd[2:])
    assert cfg.env.kwargs.data_seed == 3 and cfg.eval.env_kwargs.split == "test"
    expected = "none" if agent == "no_instruction" else modality
    assert cfg.env.kwargs.instruction == expected
    assert cfg.agent_encoder.freeze == (agent != "scratch")
    assert cfg.agent_encoder.instruction_modality == modality
    assert (cfg.get("intrinsic") is not None) == (agent == "frozen+goal")


def test_pretrain_command_composes():
    cmd = study.pretrain_command(seed=4, steps=60)
    cfg = compose("pretrain", cmd[2:])
    assert cfg.seed == 4 and cfg.trainer.steps == 60 and sorted(cfg.encoder) == ["audio", "image", "text"]
