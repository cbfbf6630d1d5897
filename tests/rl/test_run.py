"""End-to-end `mmssl rl` runs: learning above random, bit-exact resume, pretrained/frozen encoders, intrinsic hooks."""

import importlib.util
import json
import os

import gymnasium as gym
import numpy as np
import pytest
import torch

from mmssl import checkpoint
from mmssl.config import compose
from mmssl.errors import ConfigError
from mmssl.logging import metric_curve, read_metrics
from mmssl.rl.agent import Agent
from mmssl.rl.run import run


def tiny(run_dir, *extra):
    return compose("rl", [f"run_dir={run_dir}", "logger.mode=disabled", "progress=false", "eval.episodes=0",
                          "agent.num_envs=2", "agent.num_steps=16", "agent.total_timesteps=128", *extra])


def test_cartpole_learns_clearly_above_random(tmp_path):
    # a random policy balances CartPole for ~22 steps; 6k steps of PPO with a higher learning rate
    cfg = tiny(tmp_path, "agent.num_envs=4", "agent.num_steps=128", "agent.total_timesteps=6144",
               "agent.learning_rate=2.5e-3", "eval.episodes=5", "eval.deterministic=true", "eval.video=false", "seed=3")
    summary = run(cfg)
    assert summary["eval_return_mean"] > 60, summary
    assert summary["probe_state_r2"] > 0.5
    records = read_metrics(tmp_path)
    updates = [r for r in records if "policy_loss" in r]
    assert len(updates) == 12 and updates[-1]["global_step"] == 6144
    assert records[-1]["eval/success_rate"] == summary["eval_success_rate"]  # the final evaluation ends the curve


def test_periodic_evaluation_on_other_env_kwargs(tmp_path):
    # DigitGrid evaluated every update on the test split (unseen images): eval/* records at each update
    cfg = tiny(tmp_path, "env=digit_grid", "env.kwargs.instruction=none", "agent_encoder=goal_map",
               "agent_encoder.tile_encoder.width=4", "agent_encoder.dim=16", "eval.episodes=3", "eval.every=1", "eval.video=false",
               "eval.probe_episodes=0", "eval.env_kwargs={split: test}")
    run(cfg)
    evals = [r for r in read_metrics(tmp_path) if "eval/success_rate" in r]
    assert [r["step"] for r in evals] == [32, 64, 96, 128]
    assert all(0.0 <= r["eval/success_rate"] <= 1.0 for r in evals)
    steps, values = metric_curve(tmp_path, "eval/success_rate")  # what the studies plot
    assert steps == [32, 64, 96, 128] and values == [r["eval/success_rate"] for r in evals]


@pytest.mark.parametrize("extra", [
    ("agent.normalize_obs=true", "agent.normalize_reward=true", "objective=rl_inverse_dynamics",
     "intrinsic=rnd", "intrinsic.embed_dim=8", "intrinsic_integration=value_head"),
    ("env=minigrid_doorkey_5x5", "agent=ppo_minigrid", "agent_encoder=minigrid", "agent.num_envs=2",
     "agent.num_steps=16", "agent.total_timesteps=128", "objective=rl_curl", "objective.curl.augment_kwargs.pad=1"),
    ("precision=bf16", "objective=rl_inverse_dynamics"),  # the update's forward in bf16 autocast
])
def test_resume_is_bit_exact(tmp_path, extra):
    full = tiny(tmp_path / "full", *extra)
    run(full)
    part = tiny(tmp_path / "part", "stop_after_updates=2", *extra)
    assert run(part) == {"interrupted_at_update": 2}
    run(tiny(tmp_path / "part", "resume=true", *extra))
    a = checkpoint.latest(tmp_path / "full" / "checkpoints")[1]["ppo"]
    b = checkpoint.latest(tmp_path / "part" / "checkpoints")[1]["ppo"]
    for key in ("agent", "aux", "intrinsic", "obs_norm", "reward_scaler"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name} differs after resume"
    strip = lambda r: {k: v for k, v in r.items() if k not in ("time", "steps_per_second")}  # noqa: E731
    assert [strip(r) for r in read_metrics(tmp_path / "full")] == [strip(r) for r in read_metrics(tmp_path / "part")]


def test_precision_is_recorded_and_reused_on_resume(tmp_path, monkeypatch):
    monkeypatch.setenv("MMSSL_AUTO_PRECISION", "bf16")  # what precision=auto resolves to when the run starts
    assert run(tiny(tmp_path, "stop_after_updates=2")) == {"interrupted_at_update": 2}
    record = json.loads((tmp_path / "precision.json").read_text())
    assert (record["name"], record["source"]) == ("bf16", "env")
    monkeypatch.setenv("MMSSL_AUTO_PRECISION", "fp32")  # auto now says otherwise: the resumed run keeps bf16
    from mmssl.rl.ppo import PPO

    ppo = PPO(tiny(tmp_path, "resume=true"))
    assert (ppo.precision.name, ppo.precision.source) == ("bf16", "recorded")
    ppo.close()
    run(tiny(tmp_path, "resume=true"))
    assert json.loads((tmp_path / "precision.json").read_text()) == record


def test_auto_precision_probes_the_agent_network(tmp_path, monkeypatch):
    monkeypatch.delenv("MMSSL_AUTO_PRECISION")
    from mmssl.rl.ppo import PPO

    ppo = PPO(tiny(tmp_path, "agent.update_engine=torch"))  # the numpy engine computes in fp32, no probe
    figures = ppo.precision.probe
    assert ppo.precision.source == "probe" and figures["workload"].startswith("ppo-")
    assert ppo.precision.name == ("bf16" if figures["speedup"] > 1.1 else "fp32")
    ppo.close()
    again = PPO(tiny(tmp_path, "agent.update_engine=torch"))  # the same network and minibatch: the cached answer
    assert again.precision.source == "cache" and again.precision.probe == figures
    again.close()


def test_pretrained_encoder_loads_and_stays_frozen(tmp_path):
    space = gym.spaces.Box(0, 255, (3, 16, 16), np.uint8)
    pretrained = Agent(space, gym.spaces.Discrete(2), {"name": "convnet", "width": 4}).encoder.inner
    state = {"model": {f"encoders.image.{k}": v.clone() for k, v in pretrained.state_dict().items()}}
    path = checkpoint.save(state, tmp_path / "pretrain.pt")
    agent = Agent(space, gym.spaces.Discrete(2), {"name": "convnet", "width": 4}, encoder_checkpoint=str(path),
                  freeze_encoder=True)
    for k, v in pretrained.state_dict().items():
        assert torch.equal(agent.encoder.inner.state_dict()[k], v)
    agent.train()
    assert not agent.encoder.training  # BatchNorm statistics stay frozen too
    assert all(not p.requires_grad for p in agent.encoder.parameters())
    with pytest.raises(ConfigError, match="modality 'audio'"):
        Agent(space, gym.spaces.Discrete(2), {"name": "convnet", "width": 4}, encoder_checkpoint=str(path),
              checkpoint_modality="audio")


def test_run_folder_and_summary(tmp_path):
    run(tiny(tmp_path, "env=minigrid_doorkey_5x5", "agent_encoder=minigrid", "eval.episodes=1", "+env.kwargs.max_steps=30",
             "eval.max_video_frames=5"))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert {"eval_return_mean", "eval_success_rate", "probe_state_r2", "env_steps_per_second"} <= set(summary)
    assert (tmp_path / "eval_episode.gif").stat().st_size > 0
    assert (tmp_path / "config.yaml").exists()
    cells = [r["episodic_cells"] for r in read_metrics(tmp_path) if "episodes" in r]
    assert cells and all(1 <= c <= 31 for c in cells)  # distinct cells of 30-step episodes (envs.wrappers.Coverage)


@pytest.mark.filterwarnings("ignore")
@pytest.mark.skipif(importlib.util.find_spec("mujoco") is None, reason="MuJoCo not installed (pip install -e '.[mujoco]')")
def test_mujoco_run_trains_evaluates_and_renders_headless(tmp_path, monkeypatch):
    import mmssl_envs as envs

    monkeypatch.chdir(tmp_path)  # MuJoCo writes MUJOCO_LOG.TXT into the working directory

    summary = run(tiny(tmp_path, "env=halfcheetah", "agent=ppo_continuous", "agent.num_envs=1", "agent.num_steps=64",
                       "agent.num_minibatches=2", "agent.update_epochs=1", "env.max_episode_steps=40",
                       "eval.episodes=1", "eval.probe_episodes=0", "eval.max_video_frames=3"))
    assert np.isfinite(summary["eval_return_mean"])
    renders = bool(os.environ.get("MUJOCO_GL") or os.environ.get("DISPLAY") or envs.headless_gl())
    assert (tmp_path / "eval_episode.gif").exists() == renders  # no renderer: a warning, and the run still ends


def test_bad_encoder_for_env_fails_early(tmp_path):
    with pytest.raises(ConfigError, match="nature_cnn.*Box"):
        run(tiny(tmp_path, "agent_encoder=nature_cnn"))
