"""`mmssl report` on run folders written here (no trainer needed)."""

import csv
import json

import numpy as np
import pytest
import yaml

from mmssl import report
from mmssl.cli import main as cli
from mmssl.errors import ConfigError, DataError

METRIC = "eval/image/ssl/linear_probe_accuracy"


def make_run(root, name, lr, seed, final, env="A", curve=True):
    run = root / name
    run.mkdir(parents=True)
    config = {"seed": seed, "run_dir": str(run), "env": {"id": env}, "logger": {"name": name},
              "trainer": {"lr": lr, "steps": 20}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    records = [{"step": s, "time": 0.0, "train/loss": 2.0 - s * lr - 0.01 * seed} for s in (0, 10, 20)] if curve else []
    records.append({"step": 20, "time": 0.0, METRIC: final, "eval/image/raw/linear_probe_accuracy": 0.5})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (run / "summary.json").write_text(json.dumps({METRIC: final, "eval/image/raw/linear_probe_accuracy": 0.5}))
    return run


@pytest.fixture
def runs_root(tmp_path):
    root = tmp_path / "sweep" / "runs"
    for seed, (a, b) in enumerate([(0.60, 0.80), (0.62, 0.82), (0.64, 0.84), (0.90, 0.86)]):
        make_run(root, f"lr1-s{seed}", 0.01, seed, a)
        make_run(root, f"lr2-s{seed}", 0.02, seed, b)
    (root / "lr1-s0" / "wandb" / "offline-run-x" / "files").mkdir(parents=True)  # not a run: must be skipped
    (root / "lr1-s0" / "wandb" / "offline-run-x" / "files" / "config.yaml").write_text("a: 1\n")
    return root


def test_groups_by_differing_keys_except_seed(runs_root):
    runs = report.find_runs([str(runs_root.parent)])
    assert len(runs) == 8
    assert report.group_keys(runs) == ["trainer.lr"]  # seed, run_dir and logger.* differ but do not group
    rows = report.table(runs, METRIC, ["trainer.lr"], n_resamples=500)
    assert [r["trainer.lr"] for r in rows] == ["0.01", "0.02"]
    assert rows[0]["n"] == 4 and rows[0]["mean"] == pytest.approx(0.69)
    assert rows[0]["iqm"] == pytest.approx(0.63)  # middle two of 0.60, 0.62, 0.64, 0.90
    assert rows[1]["iqm"] == pytest.approx(0.83)
    assert rows[0]["ci_low"] <= rows[0]["iqm"] <= rows[0]["ci_high"]


def test_report_main_writes_tables_and_plots(runs_root, tmp_path, capsys):
    out = tmp_path / "out"
    report.main([str(runs_root / "lr*"), "--metric", "ssl/linear_probe_accuracy", "--curve", "train/loss",
                 "--out", str(out), "--resamples", "300"])
    printed = capsys.readouterr().out
    assert f"**{METRIC}**" in printed and "| 0.01 | 4 | 0.6900 ± 0.1409 | 0.6300 |" in printed
    assert (out / "report.md").read_text().strip() == printed.strip()
    rows = list(csv.DictReader(open(out / "report.csv")))
    assert [(r["trainer.lr"], r["n"]) for r in rows] == [("0.01", "4"), ("0.02", "4")]
    for png in ("curve_train_loss.png", "profile_eval_image_ssl_linear_probe_accuracy.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    assert not (out / "curve_eval_image_ssl_linear_probe_accuracy.png").exists()  # one point per run: no curve


def test_group_by_and_task_stratification(runs_root, tmp_path):
    for seed, value in enumerate([0.1, 0.2]):
        make_run(runs_root, f"envB-s{seed}", 0.01, seed, value, env="B")
    runs = report.find_runs([str(runs_root)])
    result = report.report(runs, [METRIC], ["trainer.lr"], None, task_key="env.id", n_resamples=300)
    row = result["rows"][METRIC][0]
    assert row["n"] == 6 and row["mean"] == pytest.approx((0.60 + 0.62 + 0.64 + 0.90 + 0.1 + 0.2) / 6)
    # without --group-by, env.id would group too unless it is the task key
    assert report.group_keys(runs, exclude=("env.id",)) == ["trainer.lr"]
    assert report.group_keys(runs) == ["env.id", "trainer.lr"]


def test_metric_resolution_errors(runs_root):
    runs = report.find_runs([str(runs_root)])
    assert report.resolve_metric(runs, None) == METRIC
    with pytest.raises(DataError, match="ambiguous"):
        report.resolve_metric(runs, "linear_probe_accuracy")
    with pytest.raises(DataError, match="no run has metric 'eval/succes_rate'"):
        report.resolve_metric(runs, "eval/succes_rate")
    with pytest.raises(ConfigError, match="did you mean trainer.lr"):
        report.group_keys(runs, ["trainer.lrr"])


def test_missing_values_are_counted(runs_root):
    run = runs_root / "lr1-s9"
    make_run(runs_root, "lr1-s9", 0.01, 9, 0.5)
    (run / "summary.json").write_text("{}")
    (run / "metrics.jsonl").write_text('{"step": 0, "train/loss": 1.0}\n{"step": 1, "trai')  # truncated last line
    rows = report.table(report.find_runs([str(runs_root)]), METRIC, ["trainer.lr"], n_resamples=200)
    assert rows[0]["n"] == 4 and rows[0]["missing"] == 1


def test_cli_one_line_errors(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert cli(["report", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "is not a run folder and holds none" in err and "\n" not in err
    assert cli(["report", str(tmp_path / "nope*")]) == 2
    assert "no such run folder" in capsys.readouterr().err
    make_run(tmp_path / "r", "a", 0.01, 0, 0.5)
    assert cli(["report", str(tmp_path / "r"), "--metric", "eval/success_rate", "--out", str(tmp_path / "o")]) == 2
    assert "no run has metric 'eval/success_rate'" in capsys.readouterr().err
    assert not np.any([p.suffix == ".png" for p in tmp_path.rglob("*")])


def test_wandb_runs_through_the_public_api_shape(monkeypatch, tmp_path, capsys):
    """--wandb reads config, summary and per-metric history (a stand-in for wandb.Api: no network here)."""
    import wandb

    class FakeRun:
        def __init__(self, i, lr):
            self.id, self.config = f"r{i}", {"trainer": {"lr": lr}, "seed": i, "_wandb": {"x": 1}}
            self.summary = type("S", (), {"_json_dict": {METRIC: 0.5 + lr * 10 + 0.01 * i, "_runtime": 3}})()

        def scan_history(self, keys):
            return [{"_step": s, keys[1]: 1.0 - 0.01 * s} for s in (0, 10, 20)]

    class FakeApi:
        def __init__(self, timeout=None):
            pass

        def runs(self, path, filters=None):
            assert path == "me/proj" and filters == {"state": "finished"}
            return [FakeRun(i, lr) for i, lr in enumerate([0.01, 0.01, 0.02, 0.02])]

    monkeypatch.setattr(wandb, "Api", FakeApi)
    report.main(["--wandb", "me/proj", "--metric", METRIC, "--curve", "train/loss", "--out", str(tmp_path / "o"),
                 "--resamples", "200"])
    out = capsys.readouterr().out
    assert "| 0.01 | 2 | 0.6050 ± 0.0071 |" in out and "| 0.02 | 2 |" in out
    assert (tmp_path / "o" / "curve_train_loss.png").exists()
