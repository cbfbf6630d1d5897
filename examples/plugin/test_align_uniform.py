"""The plugin is selectable by name, trains, and its run evaluates again (the plugin is recorded)."""

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def test_plugin_objective_runs_and_evaluates(tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "mmssl.cli"]
    train = ["pretrain", "plugins=[align_uniform]", "objective=align_uniform", "objective.align_uniform.lam=0.5",
             "trainer.steps=3", "eval.baselines=false", f"run_dir={run}", "logger.mode=disabled"]
    subprocess.run(cmd + train, cwd=HERE, check=True)  # cwd: the plugin module's folder
    summary = json.loads((run / "summary.json").read_text())
    assert summary["train/steps"] == 3
    out = subprocess.run(cmd + ["eval", str(run)], cwd=tmp_path, capture_output=True, text=True, env={
        **__import__("os").environ, "PYTHONPATH": str(HERE)})
    assert out.returncode == 0, out.stderr
    assert "linear probe" in out.stdout
