"""`mmssl sweep`: spec validation, grid/random expansion, local runs (faked, and 4 real tiny pretraining runs)."""

import json
import math
from pathlib import Path

import pytest
import yaml

from mmssl import sweep
from mmssl.cli import main as cli
from mmssl.errors import ConfigError

COMMAND = ["${env}", "mmssl", "pretrain", "${args_no_hyphens}"]
METRIC = "eval/image/ssl/linear_probe_accuracy"
TINY = ["logger.mode=disabled", "trainer.steps=5", "trainer.warmup_steps=2", "trainer.log_every=1",
        "trainer.checkpoint_every=0", "trainer.progress=false", "data.batch_size=32", "encoder.image.width=4",
        "eval.plot=false", "eval.baselines=false", "threads=1"]


def spec(method="grid", **params):
    params = params or {"trainer.lr": {"values": [0.001, 0.01]}}
    return {"name": "t", "method": method, "metric": {"name": METRIC, "goal": "maximize"},
            "parameters": params, "command": list(COMMAND)}


def test_shipped_specs_are_valid():
    specs = sorted((Path(__file__).resolve().parents[2] / "configs" / "sweep").glob("*.yaml"))
    assert len(specs) >= 3
    for path in specs:
        assert sweep.validate(sweep.load_spec(path)) == ("rl" if path.stem.startswith("rl_") else "pretrain")


def test_unknown_parameter_is_named():
    with pytest.raises(ConfigError, match=r"sweep parameter 'trainer.lrr'.*did you mean trainer.lr"):
        sweep.validate(spec(**{"trainer.lrr": {"values": [0.1]}}))


def test_bad_value_type_is_named():
    with pytest.raises(ConfigError, match=r"sweep parameter 'trainer.steps' value 'many'.*must be int"):
        sweep.validate(spec(**{"trainer.steps": {"values": [10, "many"]}}))
    with pytest.raises(ConfigError, match=r"sweep parameter 'objective' value 'simclrr'.*did you mean simclr"):
        sweep.validate(spec(objective={"values": ["simclrr"]}))


def test_parameters_combine_during_validation():
    # objective.byol.* only exists once objective=byol is chosen by another parameter
    ok = spec(objective={"value": "byol"}, **{"objective.byol.momentum": {"min": 0.9, "max": 0.99}})
    assert sweep.validate(ok) == "pretrain"
    with pytest.raises(ConfigError, match="'objective.byol.momentum'"):
        sweep.validate(spec(**{"objective.byol.momentum": {"min": 0.9, "max": 0.99}}))


def test_bad_method_schema_and_command():
    with pytest.raises(ConfigError, match="method must be one of grid, random, bayes, got 'hyperband'"):
        sweep.validate(spec(method="hyperband"))
    with pytest.raises(ConfigError, match="invalid sweep spec.*trainer.lr"):
        sweep.validate(spec(**{"trainer.lr": {"vals": [1]}}))
    bayes = spec(method="bayes", **{"trainer.lr": {"min": 0.001, "max": 0.01}})
    del bayes["metric"]
    with pytest.raises(ConfigError, match="bayes sweep needs `metric"):
        sweep.validate(bayes)
    with pytest.raises(ConfigError, match="is not an mmssl command"):
        sweep.validate(spec() | {"command": ["python", "train.py", "${args}"]})


def test_grid_and_random_expansion_counts():
    grid = spec(**{"trainer.lr": {"values": [1, 2, 3]}, "seed": {"values": [0, 1]}, "trainer.steps": {"value": 7}})
    configs = sweep.expand(grid)
    assert len(configs) == 6 and len({json.dumps(c, sort_keys=True) for c in configs}) == 6
    assert all(c["trainer.steps"] == 7 for c in configs)
    assert len(sweep.expand(grid, count=4)) == 4
    rand = spec("random", **{"trainer.lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2},
                             "trainer.steps": {"values": [5, 10]}}) | {"run_cap": 5}
    first, again = sweep.expand(rand, seed=3), sweep.expand(rand, seed=3)
    assert len(first) == 5 and first == again
    assert all(1e-4 <= c["trainer.lr"] <= 1e-2 and c["trainer.steps"] in (5, 10) for c in first)
    with pytest.raises(ConfigError, match="random sweep needs a run count"):
        sweep.expand(spec("random", **{"trainer.lr": {"min": 0.1, "max": 0.2}}))


def test_command_fills_agent_macros():
    cmd = sweep.command(spec(), {"trainer.lr": 0.01, "eval.plot": False}, ["seed=1"])
    assert cmd == ["/usr/bin/env", "mmssl", "pretrain", "trainer.lr=0.01", "eval.plot=False", "seed=1"]
    with pytest.raises(ConfigError, match=r"macro \$\{args_json_file\} is not supported"):
        sweep.command(spec() | {"command": ["mmssl", "pretrain", "${args_json_file}"]}, {"a": 1})


def test_dry_run_prints_and_starts_nothing(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec()))
    sweep.main(["local", str(path), "--seeds", "2", "--dry-run", "--out", str(tmp_path / "sw"), "trainer.steps=3"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and all(line.endswith("trainer.steps=3") for line in lines)
    assert "trainer.lr=0.01 seed=1" in lines[3]
    assert not (tmp_path / "sw").exists()


def test_seed_parameter_conflicts_with_seeds(tmp_path):
    with pytest.raises(ConfigError, match="sweeps `seed` itself"):
        sweep.run_local(spec(seed={"values": [0, 1]}), tmp_path / "sw", seeds=2)


def test_create_without_credentials_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec()))
    assert cli(["sweep", "create", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: `mmssl sweep create` needs a wandb login") and "\n" not in err


def _fake_run(job, env):
    """Stands in for a pretraining subprocess: writes a run folder whose metric peaks at lr = 10^-2.5."""
    run = Path(job["run_dir"])
    run.mkdir(parents=True)
    lr = job["params"]["trainer.lr"]
    (run / "config.yaml").write_text(yaml.safe_dump({"seed": job["seed"], "run_dir": str(run), "trainer": {"lr": lr}}))
    value = 1 - (math.log10(lr) + 2.5) ** 2 + 0.01 * job["seed"]
    (run / "summary.json").write_text(json.dumps({METRIC: value}))
    return job | {"returncode": 1 if lr > 0.05 else 0, "seconds": 0.0, "log": str(run) + ".log"}


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # the engine's GP on 4 points
def test_bayes_runs_sequentially_on_results(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep, "_run_one", _fake_run)
    bayes = spec("bayes", **{"trainer.lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-1}})
    result = sweep.run_local(bayes, tmp_path / "sw", seeds=2, workers=2, count=4, resamples=200)
    records = [json.loads(line) for line in (tmp_path / "sw" / "runs.jsonl").read_text().splitlines()]
    assert len(records) == 8 and sorted({r["config_index"] for r in records}) == [0, 1, 2, 3]
    assert {r["seed"] for r in records} == {0, 1}
    ok = [r for r in records if r["returncode"] == 0]
    assert sum(row["n"] for row in result["rows"][METRIC]) == len(ok) > 0
    assert (tmp_path / "sw" / "report" / "report.md").exists()


def test_local_grid_counts_failures(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep, "_run_one", _fake_run)
    result = sweep.run_local(spec(**{"trainer.lr": {"values": [0.001, 0.1]}}), tmp_path / "sw", seeds=3,
                             workers=2, resamples=200)
    rows = result["rows"][METRIC]
    assert len(rows) == 1 and rows[0]["n"] == 3  # the three lr=0.1 runs failed and are left out
    assert rows[0]["mean"] == pytest.approx(1 - 0.25 + 0.01)
    with pytest.raises(ConfigError, match="not empty"):
        sweep.run_local(spec(), tmp_path / "sw")


def test_local_sweep_of_four_tiny_pretraining_runs(tmp_path, capsys):
    """2 learning rates × 2 seeds of real `mmssl pretrain` subprocesses, then the aggregate table."""
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec()))
    out = tmp_path / "sw"
    assert cli(["sweep", "local", str(path), "--seeds", "2", "--workers", "2", "--out", str(out),
                "--resamples", "200", *TINY]) == 0
    table = capsys.readouterr().out
    assert f"**{METRIC}**" in table and "| 0.001 | 2 |" in table and "| 0.01 | 2 |" in table
    summaries = sorted(out.glob("runs/*/summary.json"))
    assert len(summaries) == 4
    assert all(0 < json.loads(p.read_text())[METRIC] <= 1 for p in summaries)
    assert yaml.safe_load((out / "runs" / "c001-s1" / "config.yaml").read_text())["trainer"]["lr"] == 0.01
    assert (out / "report" / "report.csv").exists() and (out / "report" / "curve_train_loss.png").exists()
