"""A tiny end-to-end `mmssl rl` run on DigitGrid with the goal-map agent (text instruction)."""

import json

from mmssl.config import compose
from mmssl.rl.run import run


def test_tiny_rl_run_on_digit_grid(tmp_path):
    cfg = compose("rl", [
        "env=digit_grid", "agent_encoder=goal_map", "agent=ppo_minigrid", "agent.total_timesteps=128",
        "agent.num_envs=2", "agent.num_steps=32", "agent_encoder.tile_encoder.width=4",
        "agent_encoder.instruction_encoder.dim=16", "agent_encoder.dim=16", "logger.mode=disabled",
        "eval.episodes=2", "eval.video=false", "progress=false", f"run_dir={tmp_path}"])
    summary = run(cfg)
    assert summary["global_step"] == 128 and summary["updates"] == 2
    assert 0.0 <= summary["eval_success_rate"] <= 1.0
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["global_step"] == 128
    assert list((tmp_path / "checkpoints").glob("step_*.pt"))
