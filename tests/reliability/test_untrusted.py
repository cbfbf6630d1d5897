"""Nothing in a run folder or a sweep spec is trusted: stored configs are inert data, local weights load
through the safe path, env ids cannot import modules, sweep commands are mmssl commands only."""

from __future__ import annotations

import hashlib
import io
import pathlib
import shutil

import pytest
import torch
import yaml

import mmssl_envs
from mmssl import checkpoint, sweep
from mmssl.cli import main
from mmssl.config import compose, stored_config
from mmssl.errors import ConfigError
from tests.conftest import tiny_overrides

SECRET = "s3cr3t-token-value"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("untrusted") / "run"
    assert main(["pretrain", *tiny_overrides(run)]) == 0
    return run


def _files(root: pathlib.Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _one_error(capsys, argv) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err and err[-1].startswith("error: "), (code, err)
    assert sum(line.startswith("error:") for line in err) == 1, err
    return err[-1]


def craft(run: pathlib.Path, edit) -> pathlib.Path:
    """Rewrite the newest checkpoint's stored config with ``edit(config)``, checksum and all (as an attacker can)."""
    path = checkpoint.checkpoints(run / "checkpoints")[-1]
    state = checkpoint.load(path)
    edit(state["config"])
    buffer = io.BytesIO()
    torch.save(state, buffer)
    path.write_bytes(buffer.getvalue())
    path.with_name(path.name + ".sha256").write_text(hashlib.sha256(buffer.getvalue()).hexdigest() + "\n")
    return path


def _env_secret(config):
    config["logger"]["name"] = "${oc.env:MMSSL_TEST_SECRET}"
    config["eval"]["plot"] = "${oc.env:MMSSL_TEST_SECRET}"


@pytest.mark.parametrize("command", ["eval", "export", "finetune"])
def test_resolver_in_a_stored_config_is_refused_not_resolved(command, finished_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MMSSL_TEST_SECRET", SECRET)
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    craft(run, _env_secret)
    before = _files(tmp_path)
    argv = {"eval": ["eval", str(run)], "export": ["export", str(run), "--out", str(tmp_path / "out")],
            "finetune": ["finetune", str(run), "steps=2", "eval_every=1"]}[command]
    err = _one_error(capsys, argv)
    assert "holds an interpolation" in err and "refusing to resolve" in err and SECRET not in err
    assert _files(tmp_path) == before, "a refused command wrote or changed files"
    assert not any(SECRET in p.read_text(errors="ignore") for p in tmp_path.rglob("*") if p.is_file())


def test_stored_config_switches_off_downloads_and_init_weights():
    cfg = stored_config({"data": {"name": "torchvision", "download": True, "root": "/tmp/x"},
                         "encoder": {"image": {"name": "resnet18", "weights": "/home/u/imagenet.pt"}},
                         "agent_encoder": {"name": "goal_map", "pretrained": "/some/run"}}, "run")
    assert cfg.data.download is False and cfg.data.root == "/tmp/x"
    assert cfg.encoder.image.weights is None and cfg.agent_encoder.pretrained is None
    with pytest.raises(ConfigError, match=r"interpolation at data.root"):
        stored_config({"data": {"root": "${now:%H}"}}, "run")
    with pytest.raises(ConfigError, match="holds no config"):
        stored_config(["not", "a", "mapping"], "run")


def test_finetune_does_not_act_on_the_folders_logger(finished_run):
    from mmssl.finetune import make_config

    state = checkpoint.load(checkpoint.checkpoints(finished_run / "checkpoints")[-1])
    state["config"]["logger"] |= {"mode": "online", "project": "someone-elses", "tags": ["x"]}
    cfg = make_config(state["config"], ["steps=2"])
    assert cfg.logger.mode == "auto" and cfg.logger.project == "mmssl" and list(cfg.logger.tags) == []
    cfg = make_config(state["config"], ["steps=2", "logger.mode=disabled"])  # the user's own override still counts
    assert cfg.logger.mode == "disabled"


def test_eval_and_export_of_a_clean_run_still_work(finished_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    assert main(["eval", str(run)]) == 0
    assert main(["export", str(run), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "image.safetensors").is_file()


# -- local weights through the safe loader --------------------------------------------------------------

class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("touch pwned",))


def resnet(tmp, *extra):
    return ["pretrain", *[o for o in tiny_overrides(tmp / "run", "encoder=resnet18", "data.channels=3", *extra)
                          if not o.startswith("encoder.image.width")]]


def test_encoder_weights_file_with_pickled_code_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "weights.pt"
    torch.save({"conv1.weight": _Evil()}, evil)
    err = _one_error(capsys, resnet(tmp_path, f"+encoder.image.weights={evil}"))
    assert f"weights file {evil} cannot be loaded safely" in err and "posix.system" in err
    assert "weights_only" not in err and "trusted source" not in err  # never torch's "set weights_only=False"
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "run").exists()


def test_encoder_weights_that_are_not_a_state_dict(tmp_path, capsys):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"definitely not a torch file")
    err = _one_error(capsys, resnet(tmp_path, f"+encoder.image.weights={junk}"))
    assert "junk.pt cannot be loaded safely" in err and "not a torch file" in err
    listy = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], listy)
    err = _one_error(capsys, resnet(tmp_path, f"+encoder.image.weights={listy}"))
    assert "holds no state dict of tensors" in err


def test_checkpoint_refusal_never_repeats_the_weights_only_advice(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "step_00000001.pt"
    torch.save({"model": _Evil()}, evil)
    err = _one_error(capsys, ["eval", str(evil)])
    assert "cannot be loaded safely" in err and "weights_only" not in err and "posix.system" in err
    assert not (tmp_path / "pwned").exists()


# -- env ids that import modules ------------------------------------------------------------------------

ENV_MODULE = '''
import pathlib
import gymnasium as gym
pathlib.Path(__file__).with_name("imported.marker").write_text("module code ran")
if "MmsslTestEnv-v0" not in gym.registry:
    gym.register("MmsslTestEnv-v0", entry_point="gymnasium.envs.classic_control.cartpole:CartPoleEnv")
'''


def rl(tmp, *extra):
    return ["rl", f"run_dir={tmp / 'run'}", "logger.mode=disabled", "progress=false", "eval.episodes=0",
            "agent.num_envs=2", "agent.num_steps=16", "agent.total_timesteps=32", "checkpoint_every=0", *extra]


@pytest.fixture
def env_module(tmp_path, monkeypatch):
    (tmp_path / "mmssl_test_env_mod.py").write_text(ENV_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path / "imported.marker"


def test_env_id_import_is_refused_without_plugins(tmp_path, capsys, env_module):
    err = _one_error(capsys, rl(tmp_path, "env.id=mmssl_test_env_mod:MmsslTestEnv-v0"))
    assert "'mmssl_test_env_mod'" in err and "plugins=[mmssl_test_env_mod]" in err and "env.allow_import=true" in err
    assert not env_module.exists(), "the module's code ran"
    assert not (tmp_path / "run").exists()
    err = _one_error(capsys, rl(tmp_path, "env=minigrid_doorkey_5x5", "env.kwargs.env_id=mmssl_test_env_mod:MmsslTestEnv-v0"))
    assert "env.kwargs.env_id" in err and not env_module.exists()


def test_env_id_import_with_explicit_flag_runs(tmp_path, env_module):
    assert main(rl(tmp_path, "env.id=mmssl_test_env_mod:MmsslTestEnv-v0", "env.allow_import=true")) == 0
    assert env_module.exists()


def test_env_import_allowed_for_listed_plugins():
    mmssl_envs.check_import([{"id": "mmssl_test_env_mod:MmsslTestEnv-v0"}], ["mmssl_test_env_mod"])
    mmssl_envs.check_import([{"id": "CartPole-v1"}, {"id": "mmssl/DigitGrid-v0"}], [])  # registered ids import nothing
    with pytest.raises(ConfigError, match="would import module 'pkg.mod'"):
        mmssl_envs.check_import([{"id": "pkg.mod:Env"}], ["pkg"])  # the package is not the module
    cfg = compose("rl", ["env.id=mmssl_test_env_mod:MmsslTestEnv-v0"])
    from omegaconf import OmegaConf

    OmegaConf.update(cfg, "plugins", ["mmssl_test_env_mod"], force_add=True)
    mmssl_envs.check_import([cfg.env], cfg.get("plugins") or [])


# -- sweep commands --------------------------------------------------------------------------------------

def _spec(tmp_path, command):
    spec = {"name": "t", "method": "grid", "metric": {"name": "eval/x", "goal": "maximize"},
            "parameters": {"trainer.lr": {"values": [0.001]}}}
    if command is not None:
        spec["command"] = command
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize("command", [
    ["bash", "-c", "touch pwned"],
    ["${env}", "python", "evil.py", "${args_no_hyphens}"],
    ["${env}", "${interpreter}", "-m", "mmssl.cli", "pretrain", "${args_no_hyphens}"],
    ["${env}", "/tmp/elsewhere/mmssl", "pretrain", "${args_no_hyphens}"],
    ["sh", "-c", "mmssl pretrain"],
    ["mmssl", "pretrain", "${args_no_hyphens}", "; rm -rf ~"],
    ["mmssl", "eval", "${args_no_hyphens}"],
    "mmssl pretrain ${args_no_hyphens}",
    None,  # wandb's default: ${env} ${interpreter} ${program} ${args}
], ids=lambda c: "default" if c is None else (c if isinstance(c, str) else " ".join(c))[:30])
def test_sweep_command_other_than_mmssl_is_refused(tmp_path, capsys, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    path = _spec(tmp_path, command)
    err = _one_error(capsys, ["sweep", "local", str(path), "--dry-run", "--out", str(tmp_path / "sw")])
    assert "is not an mmssl command" in err and "--allow-any-command" in err
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "sw").exists()


def test_mmssl_command_forms_are_accepted():
    assert sweep.program_of({"command": ["${env}", "mmssl", "pretrain", "${args_no_hyphens}"]}) == "pretrain"
    assert sweep.program_of({"command": ["mmssl", "rl", "${args_no_hyphens}"]}) == "rl"
    assert sweep.program_of({"command": ["mmssl", "pretrain", "${args_no_hyphens}", "trainer.steps=5",
                                         "+data.limit=3"]}) == "pretrain"
    assert sweep.program_of({"command": ["${env}", "python", "-m", "mmssl.cli", "pretrain"]},
                            allow_any_command=True) == "pretrain"
