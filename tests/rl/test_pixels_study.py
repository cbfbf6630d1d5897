"""The pixel comparison's commands compose into valid configs (experiments/rl_core/pixels.py)."""

import argparse
import importlib.util
from pathlib import Path

import pytest

from mmssl.config import compose

RUNNER = Path(__file__).parents[2] / "experiments" / "rl_core" / "pixels.py"
spec = importlib.util.spec_from_file_location("pixels_study", RUNNER)
study = importlib.util.module_from_spec(spec)
spec.loader.exec_module(study)


@pytest.mark.parametrize("arm", ["plain", "curl", "atc"])
def test_pixel_arms_compose_at_equal_frames(arm):
    args = argparse.Namespace(env_id="MiniGrid-Empty-5x5-v0", tile=4, frames=2048)
    cfg = compose("rl", study.command(arm, 2, args)[2:])
    assert cfg.agent.total_timesteps == 2048 and cfg.env.kwargs.tile_size == 4 and cfg.seed == 2
    assert (cfg.get("objective") is None) == (arm == "plain")
    if arm != "plain":
        assert arm in cfg.objective
