"""SIGKILL `mmssl rl` (PPO on CartPole, running obs/reward normalisers, checkpoint every update) at random points; resume is bit-identical."""

import time

import pytest
import torch

from mmssl.config import compose
from mmssl.logging import read_metrics
from mmssl.rl.run import run
from mmssl.train import checkpoint
from tests.reliability.harness import kill_inside_save, rl, run_with_kills

KILLS = 6


def _cfg(run_dir):
    return compose("rl", [f"run_dir={run_dir}", "logger.mode=disabled", "progress=false", "eval.episodes=0",
                          "agent.num_envs=2", "agent.num_steps=16", "agent.total_timesteps=320", "checkpoint_every=1",
                          "agent.normalize_obs=true", "agent.normalize_reward=true"])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    reference, killed = tmp_path_factory.mktemp("rl-ref"), tmp_path_factory.mktemp("rl-killed")
    start = time.perf_counter()
    run(_cfg(reference))
    seconds = time.perf_counter() - start
    stats = run_with_kills(_cfg(killed), killed, kills=KILLS, max_delay=1.5 * seconds / KILLS, seed=7, train=rl)
    print(f"\nrl: {stats}")
    return reference, killed, stats


def test_rl_survives_kills_bit_identical(runs):
    reference, killed, stats = runs
    assert stats.kills >= KILLS - 1 and not stats.corrupt, stats
    a = checkpoint.latest(reference / "checkpoints")[1]["ppo"]
    b = checkpoint.latest(killed / "checkpoints")[1]["ppo"]
    assert a["update_index"] == b["update_index"] == 10
    for key in ("agent", "intrinsic", "obs_norm", "reward_scaler"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name} differs after kill/resume"
    for index, moments in a["optimizer"]["state"].items():
        for name, value in moments.items():
            assert torch.equal(value, b["optimizer"]["state"][index][name]), f"optimizer {index}/{name}"


def test_rl_kill_inside_checkpoint_write(runs, tmp_path):
    reference, _, _ = runs
    stats = kill_inside_save(_cfg(tmp_path), tmp_path, nth_save=4, nth_replace=1, train=rl)
    assert stats.kills == 1 and not stats.corrupt and stats.leftover_temp_files == 1, stats
    a = checkpoint.latest(reference / "checkpoints")[1]["ppo"]["agent"]
    b = checkpoint.latest(tmp_path / "checkpoints")[1]["ppo"]["agent"]
    assert all(torch.equal(a[name], b[name]) for name in a)


@pytest.mark.xfail(strict=True, reason="a kill after an update is logged but before its checkpoint leaves that record "
                                       "in metrics.jsonl and the resumed run appends it again; fix in report")
def test_rl_metrics_have_no_duplicates_after_kill(runs, tmp_path):
    reference, _, _ = runs
    kill_inside_save(_cfg(tmp_path), tmp_path, nth_save=4, nth_replace=1, train=rl)  # update 4 logged, not saved
    steps = [r["global_step"] for r in read_metrics(tmp_path)]
    assert steps == [r["global_step"] for r in read_metrics(reference)], steps
