"""The exploration study's bookkeeping (experiments/exploration/run.py): success curves, frames to a success
level, the IQM table and curve plot, and the study's env configs."""

import importlib.util
import json
from pathlib import Path

import pytest

from mmssl.config import compose
from mmssl.errors import DataError

RUNNER = Path(__file__).parents[2] / "experiments" / "exploration" / "run.py"
spec = importlib.util.spec_from_file_location("exploration_study", RUNNER)
study = importlib.util.module_from_spec(spec)
spec.loader.exec_module(study)


def write_metrics(run_dir: Path, rows: list[dict]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_success_curve_weights_updates_by_their_episodes(tmp_path):
    write_metrics(tmp_path, [
        {"global_step": 100, "success_rate": 0.0, "episodes": 3, "episodic_cells": 4.0},
        {"global_step": 200, "success_rate": 1.0, "episodes": 1, "episodic_cells": 8.0},  # same window: 1 of 4 won
        {"global_step": 300, "bonus_mean": 0.0},                     # no episode ended: not counted
        {"global_step": 900, "success_rate": 0.5, "episodes": 4},
        {"global_step": 1000, "eval/success_rate": 1.0},             # evaluation rows are not training episodes
    ])
    curve = study.success_curve(tmp_path, frames=1000, bins=4)
    assert curve == [[250, 0.25, 4, 5.0], [500, None, 0, None], [750, None, 0, None], [1000, 0.5, 4, None]]
    assert study.frames_to(curve, 0.5) == 1000
    assert study.frames_to(curve, 0.9) is None


def record(reward: str, seed: int, final: float, curve: list) -> dict:
    return {"reward": reward, "seed": seed, "frames": 1000, "wall_s": 6.0, "train_success_last100": final,
            "eval_success_rate": final, "curve": curve}


def test_report_table_and_plot(tmp_path):
    results = tmp_path / "results_toy.jsonl"
    rows = [record("none", s, 0.1 * s, [[500, 0.0, 2], [1000, 0.1 * s, 2]]) for s in (1, 2, 3)]
    rows += [record("counts", s, 0.95, [[500, 0.5, 2], [1000, 0.95, 3]]) for s in (1, 2, 3)]
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_metrics(tmp_path / "runs" / "counts-s1", [{"global_step": 500, "intrinsic/counts/bonus_mean": 0.002}])
    text = study.report(str(results), tmp_path / "runs", tmp_path / "toy.png")
    lines = text.splitlines()
    assert len(lines) == 4 and (tmp_path / "toy.png").stat().st_size > 0
    assert not (tmp_path / "toy_cells.png").exists()  # the runs report no cells visited: no cells plot
    none, counts = lines[2].split(" | "), lines[3].split(" | ")
    assert none[2].startswith("0.20 [") and none[4] == "not reached, not reached, not reached"
    assert counts[2] == "0.95 [0.95, 0.95]" and counts[4] == "0.00M, 0.00M, 0.00M" and counts[7] == "2.0e-03"
    assert none[7] == "n/a" and none[8] == "100.0 |"  # 6 s per 1000 frames = 100 min per 1M
    # 3 of 3 runs end ≥ 90% against 0 of 3: one-sided Fisher exact p = 1 / C(6, 3) = 0.05
    assert none[5] == "0/3" and counts[5] == "3/3 (p = 0.05)"


def test_report_adds_cells_visited_where_the_runs_report_them(tmp_path):
    results = tmp_path / "results_grid.jsonl"
    rows = [record("none", s, 0.0, [[100, 0.0, 2, 5.0], [950, 0.0, 2, 6.0], [1000, 0.0, 2, 8.0]]) for s in (1, 2)]
    rows.append(record("old", 1, 0.0, [[500, 0.0, 2], [1000, 0.0, 2]]))  # recorded before cells were counted
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    lines = study.report(str(results), tmp_path / "runs", tmp_path / "grid.png").splitlines()
    assert "cells visited per episode" in lines[0]
    assert lines[2].split(" | ")[6] == "7.00 [7.00, 7.00]"  # the windows in the last 10% of frames: 6 and 8
    assert len(lines) == 4 and lines[3].split(" | ")[6] == "n/a"
    assert (tmp_path / "grid.png").stat().st_size > 0 and (tmp_path / "grid_cells.png").stat().st_size > 0


def test_plot_study_redraws_from_the_results_file_alone(tmp_path):
    rows = [record(name, s, 0.5, [[500, 0.2, 2, 4.0], [1000, 0.5, 2, 6.0]]) for name in ("counts", "none", "rnd")
            for s in (1, 2)]
    written = study.plot_study(rows, tmp_path / "toy.png")  # no run folders anywhere
    assert written == [tmp_path / "toy.png", tmp_path / "toy_cells.png"]
    assert all(p.stat().st_size > 0 for p in written)


def test_report_of_an_empty_study_says_so(tmp_path):
    (tmp_path / "results_empty.jsonl").write_text("")
    with pytest.raises(DataError, match="holds no runs"):
        study.report(str(tmp_path / "results_empty.jsonl"), tmp_path, tmp_path / "empty.png")


@pytest.mark.parametrize("env,env_id", [("minigrid_doorkey_8x8", "MiniGrid-DoorKey-8x8-v0"),
                                        ("minigrid_keycorridor_s3r3", "MiniGrid-KeyCorridorS3R3-v0"),
                                        ("minigrid_multiroom_n4_s5", "MiniGrid-MultiRoom-N4-S5-v0")])
def test_study_envs_compose(env, env_id):
    cfg = compose("rl", [f"env={env}", "agent=ppo_minigrid", "agent_encoder=minigrid", "intrinsic=counts"])
    assert cfg.env.kwargs.env_id == env_id and cfg.env.success == "positive_terminal"
