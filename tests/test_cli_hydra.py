"""Hydra's own command line on `mmssl pretrain` / `mmssl rl`: --help, --cfg, --info, -m, --config-dir, -sc."""

from __future__ import annotations

import json

import pytest
import yaml

from mmssl import cli, config


@pytest.fixture(autouse=True)
def _no_extra_config_dirs(monkeypatch):
    monkeypatch.setattr(config, "_extra_dirs", [])


def test_help_lists_groups_options_and_config(capsys):
    assert cli.main(["pretrain", "--help"]) == 0
    out = capsys.readouterr().out
    assert "== Configuration groups ==" in out
    assert "objective: " in out and "simclr" in out and "byol" in out
    assert "data: " in out and "digits" in out
    assert "trainer:" in out.split("== Config ==")[1]


def test_every_subcommand_answers_help(capsys):
    for command in ("pretrain", "rl", "eval", "finetune", "export", "sweep", "report", "list"):
        try:
            code = cli.main([command, "--help"])
        except SystemExit as exc:  # argparse's own --help exits 0
            code = exc.code
        assert code == 0, command
        assert capsys.readouterr().out.strip(), command


def test_cfg_job_prints_the_composed_config(capsys):
    assert cli.main(["rl", "--cfg", "job", "agent.num_envs=3"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["agent"]["num_envs"] == 3 and cfg["env"]["name"]
    assert cli.main(["pretrain", "--cfg", "job", "--package", "trainer"]) == 0
    assert "steps:" in capsys.readouterr().out


def test_info_names_the_search_path(capsys):
    assert cli.main(["pretrain", "--info", "searchpath"]) == 0
    assert str(config.config_dir()) in capsys.readouterr().out
    assert cli.main(["pretrain", "--info", "defaults"]) == 0
    assert "objective: simclr=simclr" in capsys.readouterr().out


def test_bad_flags_and_overrides_are_one_line(capsys):
    assert cli.main(["pretrain", "--bogus"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unrecognized arguments: --bogus" in err
    assert cli.main(["pretrain", "--cfg", "job", "trainer.stepz=3"]) == 2
    assert "did you mean trainer.steps" in capsys.readouterr().err


def test_config_dir_adds_and_replaces_files(tmp_path, capsys):
    (tmp_path / "objective").mkdir()
    (tmp_path / "objective" / "simclr.yaml").write_text("simclr:\n  name: simclr\n  temperature: 0.7\n")
    (tmp_path / "objective" / "simclr_hot.yaml").write_text("simclr:\n  name: simclr\n  temperature: 0.9\n")
    assert cli.main(["pretrain", "--config-dir", str(tmp_path), "--cfg", "job", "--package", "objective"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == {"simclr": {"name": "simclr", "temperature": 0.7}}
    cfg = config.compose("pretrain", ["objective=simclr_hot"])
    assert cfg.objective.simclr.temperature == 0.9
    assert cli.main(["pretrain", "--config-dir", str(tmp_path / "missing"), "--cfg", "job"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_multirun_runs_one_folder_per_job(tmp_path, monkeypatch, capsys):
    from mmssl.train import pretrain

    seen = []
    monkeypatch.setattr(pretrain, "main", lambda overrides: seen.append(overrides))
    assert cli.main(["pretrain", "-m", "trainer.steps=2,3", "objective=simclr,byol", f"run_dir={tmp_path}/sw"]) == 0
    assert len(seen) == 4
    assert sorted(o[-1] for o in seen) == [f"run_dir={tmp_path}/sw/{i}" for i in range(4)]
    assert {(o[0], o[1]) for o in seen} == {(f"trainer.steps={s}", f"objective={n}") for s in (2, 3)
                                            for n in ("simclr", "byol")}
    # every job is composed before the first starts: a bad value in the sweep runs nothing
    seen.clear()
    assert cli.main(["pretrain", "-m", "trainer.steps=2,abc", f"run_dir={tmp_path}/bad"]) == 2
    assert seen == [] and "trainer.steps must be int" in capsys.readouterr().err


def test_multirun_refuses_a_used_folder(tmp_path, capsys):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "0").mkdir()
    assert cli.main(["pretrain", "-m", "trainer.steps=2,3", f"run_dir={tmp_path}/used"]) == 2
    assert "not empty" in capsys.readouterr().err


def test_shell_completion_install_and_query(capsys, monkeypatch):
    assert cli.main(["pretrain", "-sc", "install=bash"]) == 0
    script = capsys.readouterr().out
    assert "complete -o nospace -o default -F hydra_bash_completion" in script and "query=bash" in script
    monkeypatch.setenv("COMP_LINE", "mmssl pretrain objective=si")
    monkeypatch.setenv("COMP_POINT", str(len("mmssl pretrain objective=si")))
    assert cli.main(["-sc", "query=bash"]) == 0
    assert set(capsys.readouterr().out.split()) >= {"objective=simclr", "objective=simsiam", "objective=siglip"}
    monkeypatch.setenv("COMP_LINE", "mmssl pre")
    assert cli.main(["-sc", "query=bash"]) == 0
    assert capsys.readouterr().out.split() == ["pretrain"]


def test_multirun_end_to_end(tmp_path, capsys):
    """Two real tiny pretraining runs, each in its own folder with its own config."""
    root = tmp_path / "mr"
    assert cli.main(["pretrain", "-m", "trainer.steps=2,3", "eval.baselines=false", "logger.mode=disabled",
                     f"run_dir={root}"]) == 0
    steps = [json.loads((root / i / "summary.json").read_text())["train/steps"] for i in ("0", "1")]
    assert steps == [2, 3]
    assert yaml.safe_load((root / "1" / "config.yaml").read_text())["run_dir"] == str(root / "1")
