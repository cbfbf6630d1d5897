"""SIGKILL `mmssl rl` (PPO on CartPole, running obs/reward normalisers, checkpoint every update) at random points; resume is bit-identical."""

import time

import pytest
import torch

from mmssl import checkpoint
from mmssl.config import compose
from mmssl.logging import read_metrics
from mmssl.rl.run import run
from tests.reliability.harness import kill_inside_save, kill_until, rl

KILLS = 6


def _cfg(run_dir):
    return compose("rl", [f"run_dir={run_dir}", "logger.mode=disabled", "progress=false", "eval.episodes=0",
                          "agent.num_envs=2", "agent.num_steps=16", "agent.total_timesteps=320", "checkpoint_every=1",
                          "agent.normalize_obs=true", "agent.normalize_reward=true"])


def _final(run_dir):
    return checkpoint.latest(run_dir / "checkpoints")[1]["ppo"]


def _assert_identical(reference, run_dir):
    a, b = _final(reference), _final(run_dir)
    assert a["update_index"] == b["update_index"] == 10
    for key in ("agent", "intrinsic", "obs_norm", "reward_scaler"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name} differs after kill/resume"
    for index, moments in a["optimizer"]["state"].items():
        for name, value in moments.items():
            assert torch.equal(value, b["optimizer"]["state"][index][name]), f"optimizer {index}/{name}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    reference = tmp_path_factory.mktemp("rl-ref")
    start = time.perf_counter()
    run(_cfg(reference))
    return reference, time.perf_counter() - start


def test_rl_survives_random_kills_bit_identical(reference, tmp_path):
    reference, seconds = reference
    stats = kill_until(_cfg, tmp_path, KILLS, max_delay=seconds / KILLS, seed=7, train=rl,
                       check=lambda run_dir: _assert_identical(reference, run_dir))
    print(f"\nrl: {stats}")
    assert stats.kills == KILLS and not stats.corrupt, stats


def test_rl_kill_inside_checkpoint_write(reference, tmp_path):
    stats = kill_inside_save(_cfg(tmp_path), tmp_path, nth_save=4, nth_replace=1, train=rl)
    assert stats.kills == 1 and not stats.corrupt and stats.leftover_temp_files == 1, stats
    _assert_identical(reference[0], tmp_path)


def test_rl_metrics_have_no_duplicates_after_kill(reference, tmp_path):
    reference, _ = reference
    # update 4 is logged, then the kill lands before its checkpoint: resuming must drop that record, not repeat it
    kill_inside_save(_cfg(tmp_path), tmp_path, nth_save=4, nth_replace=1, train=rl)
    steps = [r["global_step"] for r in read_metrics(tmp_path)]
    assert steps == [r["global_step"] for r in read_metrics(reference)], steps
