"""Study plots are redrawn from the committed results tables alone (no run folders), and rl_core's report
summarises run folders into the small tables it commits."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest

from mmssl.errors import DataError

ROOT = Path(__file__).resolve().parents[1]


def load(path: str, name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_run(folder: Path, frames: int, key: str, values: list[float]) -> None:
    folder.mkdir(parents=True)
    step = frames // len(values)
    (folder / "metrics.jsonl").write_text("".join(
        json.dumps({"step": (i + 1) * step, "global_step": (i + 1) * step, key: v}) + "\n" for i, v in enumerate(values)))
    (folder / "summary.json").write_text(json.dumps({
        "global_step": frames, "train_return_last100": 0.9, "train_success_last100": 1.0, "eval_return_mean": 0.95,
        "eval_return_std": 0.01, "eval_success_rate": 1.0, "probe_state_r2": None, "env_steps_per_second": 100.0,
        "train_wall_clock_s": 10.0}))


def test_rl_core_report_summarises_runs_and_replots_from_its_csv(tmp_path):
    report = load("experiments/rl_core/report.py", "rl_core_report")
    runs, out = tmp_path / "runs", tmp_path / "out"
    out.mkdir()
    fake_run(runs / "doorkey_s1", 1000, "success_rate", [0.0] * 50 + [1.0] * 50)  # 100 updates of 10 frames
    fake_run(runs / "doorkey_s2", 1000, "success_rate", [0.5] * 100)
    fake_run(runs / "doorkey_pixels_s1", 1000, "success_rate", [0.2] * 100)  # another study: not in doorkey
    report.main(["--runs", str(runs), "--out", str(out)])
    rows = json.loads((out / "results.json").read_text())
    assert [(r["study"], r["run"], r["seed"], r["frames"]) for r in rows] == [
        ("doorkey", "doorkey_s1", 1, 1000), ("doorkey", "doorkey_s2", 2, 1000), ("doorkey_pixels", "doorkey_pixels_s1", 1, 1000)]
    with open(out / "curves.csv", newline="") as f:
        curve = [r for r in csv.DictReader(f) if r["run"] == "doorkey_s1"]
    assert len(curve) == report.BINS and curve[0]["frames"] == "20" and curve[-1]["frames"] == "1000"
    assert [float(r["value"]) for r in curve] == [0.0] * 25 + [1.0] * 25  # 2 updates per window
    for png in ("doorkey.png", "doorkey_pixels.png"):
        (out / png).unlink()
    report.main(["--plot-only", "--out", str(out)])  # from curves.csv only
    assert (out / "doorkey.png").stat().st_size > 0 and (out / "doorkey_pixels.png").stat().st_size > 0
    assert not (out / "cartpole.png").exists()


def test_rl_core_report_without_runs_says_so(tmp_path):
    report = load("experiments/rl_core/report.py", "rl_core_report")
    with pytest.raises(DataError, match="no finished run"):
        report.main(["--runs", str(tmp_path), "--out", str(tmp_path)])


def test_label_efficiency_and_transfer_plots_from_the_committed_tables(tmp_path):
    study = load("experiments/label_efficiency/run.py", "label_efficiency_run")
    results = json.loads((ROOT / "experiments/label_efficiency/results.json").read_text())
    study.plot(results, [0.01, 0.05, 0.1, 1.0], [0, 1, 2], tmp_path / "le.png", "digits")
    transfer = load("experiments/transfer_real/run.py", "transfer_real_run")
    results = json.loads((ROOT / "experiments/transfer_real/results.json").read_text())
    transfer.plot(results, results["seeds"], tmp_path / "tr.png", results["train_per_class"])
    assert (tmp_path / "le.png").stat().st_size > 0 and (tmp_path / "tr.png").stat().st_size > 0


def test_bench_plots_from_the_committed_tables(tmp_path):
    scaling = load("bench/scaling.py", "bench_scaling")
    scaling.plot(json.loads((ROOT / "bench/results/scaling_batch.json").read_text()), tmp_path)
    rl = load("bench/rl_scaling.py", "bench_rl_scaling")
    rl.plot(json.loads((ROOT / "bench/results/rl_scaling_cartpole.json").read_text()), "cartpole", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rl_scaling_cartpole.png", "scaling_batch.png",
                                                          "scaling_batch_memory.png"]


def test_pixels_and_flagship_plots_from_the_committed_tables(tmp_path):
    pixels = load("experiments/rl_core/pixels.py", "pixels_study_plot")
    pixels.plot(pixels.read_summary(ROOT / "experiments/rl_core/pixels.json"), tmp_path / "pixels.png")
    flagship = load("experiments/flagship/run.py", "flagship_study_plot")
    flagship.plot(json.loads((ROOT / "experiments/flagship/results.json").read_text()), tmp_path / "flagship.png")
    embedding = load("experiments/crossmodal_digits/embedding.py", "crossmodal_embedding_plot")
    embedding.plot(ROOT / "experiments/crossmodal_digits/crossmodal_embedding.csv", tmp_path / "embedding.png")
    objectives = load("experiments/objectives/run.py", "objectives_study_plot")
    objectives.plot(json.loads((ROOT / "experiments/objectives/results_digits_vit.json").read_text()), tmp_path / "obj")
    assert all((tmp_path / f"{name}.png").stat().st_size > 0 for name in ("pixels", "flagship", "embedding", "obj"))
