"""PPO guards non-finite values: a NaN/Inf observation, reward, loss or gradient stops the update with one line
naming where (env step, env index, which tensor), no checkpoint with non-finite weights is written, and
minibatch settings that cannot work are refused before training, with the numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import mmssl_envs
from mmssl import checkpoint
from mmssl.cli import main
from mmssl.config import compose
from mmssl.errors import NonFiniteError
from mmssl.rl import ppo as ppo_module
from mmssl.rl.ppo import PPO
from mmssl.rl.run import run

RL = ["logger.mode=disabled", "progress=false", "eval.episodes=0", "agent.num_envs=2", "agent.num_steps=16",
      "agent.total_timesteps=96", "checkpoint_every=1"]


def _cfg(tmp_path, *extra):
    return compose("rl", [f"run_dir={tmp_path / 'run'}", *RL, *extra])


def _poison_envs(monkeypatch, at_step: int, env: int, what: str, value=float("nan")):
    """From the ``at_step``-th vector step on, env ``env`` returns ``value`` in its observation or reward."""
    real = mmssl_envs.make_vector

    def make_vector(*args, **kwargs):
        envs = real(*args, **kwargs)
        step, calls = envs.step, [0]

        def poisoned(actions):
            obs, reward, terminated, truncated, infos = step(actions)
            calls[0] += 1
            if calls[0] >= at_step:
                obs, reward = np.array(obs, dtype=np.float32), np.array(reward, dtype=np.float64)
                if what == "observation":
                    obs[env, 1] = value
                else:
                    reward[env] = value
            return obs, reward, terminated, truncated, infos

        envs.step = poisoned  # an instance attribute: the env stays a SyncVectorEnv (snapshots still work)
        return envs

    monkeypatch.setattr(mmssl_envs, "make_vector", make_vector)


def _weights(ppo):
    return {k: v.clone() for k, v in ppo.agent.state_dict().items()}


@pytest.mark.parametrize("what, value", [("observation", float("nan")), ("reward", float("inf")),
                                         ("reward", float("nan"))])
def test_nonfinite_env_output_stops_naming_step_env_and_tensor(tmp_path, monkeypatch, what, value):
    _poison_envs(monkeypatch, at_step=3, env=1, what=what, value=value)
    ppo = PPO(_cfg(tmp_path))
    with pytest.raises(NonFiniteError) as info:
        ppo.update()
    message = str(info.value)
    assert f"non-finite {what} from env 1 at env step 6 (update 1, rollout step 3/16)" in message, message
    assert "\n" not in message
    ppo.close()


def test_nonfinite_reward_in_a_run_stops_it_and_writes_no_checkpoint(tmp_path, monkeypatch, capsys):
    _poison_envs(monkeypatch, at_step=20, env=0, what="reward")  # update 2 (16 steps per update)
    assert main(["rl", f"run_dir={tmp_path / 'run'}", *RL]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert sum(line.startswith("error:") for line in err) == 1 and err[-1].startswith("error: non-finite reward"), err
    assert "from env 0 at env step 40 (update 2, rollout step 4/16)" in err[-1]
    names = [p.name for p in checkpoint.checkpoints(tmp_path / "run" / "checkpoints")]
    assert names == ["step_000000032.pt"]  # the update-1 checkpoint only
    assert not (tmp_path / "run" / "summary.json").exists() and not (tmp_path / "run" / "run.lock").exists()


def test_nonfinite_loss_stops_before_the_optimiser_step(tmp_path, monkeypatch):
    # the autograd update; the numpy engine's guards: tests/rl/test_numpy_update.py
    ppo = PPO(_cfg(tmp_path, "agent.update_engine=torch"))
    before = _weights(ppo)
    real = ppo_module.value_loss
    monkeypatch.setattr(ppo_module, "value_loss", lambda *a, **k: real(*a, **k) * float("nan"))
    with pytest.raises(NonFiniteError, match=r"non-finite loss \(value_loss\) at update 1 \(epoch 1, minibatch 1\)"):
        ppo.update()
    assert all(torch.equal(before[k], v) for k, v in ppo.agent.state_dict().items())
    ppo.close()


def test_nonfinite_gradient_names_the_parameter(tmp_path):
    ppo = PPO(_cfg(tmp_path, "agent.update_engine=torch"))
    before = _weights(ppo)
    name, param = next((n, p) for n, p in ppo.agent.named_parameters() if p.ndim == 2)
    param.register_hook(lambda grad: torch.full_like(grad, float("inf")))
    with pytest.raises(NonFiniteError, match=rf"non-finite gradient in {name}.* at update 1 \(epoch 1, minibatch 1\)"):
        ppo.update()
    assert all(torch.equal(before[k], v) for k, v in ppo.agent.state_dict().items())
    ppo.close()


def test_a_checkpoint_with_nonfinite_weights_is_never_written(tmp_path, monkeypatch, capsys):
    real = PPO.update

    def update(self):
        metrics = real(self)
        if self.update_index == 2:  # weights gone bad by some path the guards did not see
            with torch.no_grad():
                next(self.agent.parameters()).fill_(float("nan"))
        return metrics

    monkeypatch.setattr(PPO, "update", update)
    assert main(["rl", f"run_dir={tmp_path / 'run'}", *RL]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: weights became non-finite by update 2 (agent.") and "no checkpoint written" in err
    assert [p.name for p in checkpoint.checkpoints(tmp_path / "run" / "checkpoints")] == ["step_000000032.pt"]
    assert checkpoint.nonfinite_tensors(checkpoint.latest(tmp_path / "run" / "checkpoints")[1]["ppo"]["agent"]) == []


def test_pretraining_never_checkpoints_nonfinite_weights(tmp_path):
    from mmssl.train.trainer import Trainer
    from tests.conftest import tiny_overrides

    trainer = Trainer(compose("pretrain", tiny_overrides(tmp_path)), tmp_path)
    with torch.no_grad():
        next(trainer.model.parameters()).fill_(float("inf"))
    with pytest.raises(NonFiniteError, match="model weights became non-finite by step 0"):
        trainer.save()
    assert not (tmp_path / "checkpoints").exists() or not checkpoint.checkpoints(tmp_path / "checkpoints")


@pytest.mark.parametrize("extra, expect", [
    (("agent.num_envs=2", "agent.num_steps=2", "agent.num_minibatches=4"),
     ("agent.num_minibatches=4 gives minibatches of 1 from a batch of 4", "at most 2 minibatches")),
    (("agent.num_envs=2", "agent.num_steps=15", "agent.num_minibatches=4"),
     ("agent.num_minibatches=4 does not split the batch of 30", "agent.num_envs=2 × agent.num_steps=15")),
    (("agent.num_envs=1", "agent.num_steps=1", "agent.num_minibatches=1"), ("minibatches of 1 from a batch of 1",)),
])
def test_minibatch_settings_that_cannot_work_are_refused_before_training(tmp_path, capsys, extra, expect):
    assert main(["rl", f"run_dir={tmp_path / 'run'}", *RL, *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert sum(line.startswith("error:") for line in err) == 1, err
    for text in expect:
        assert text in err[-1], err[-1]
    assert not (tmp_path / "run").exists()


def test_finite_run_is_unaffected(tmp_path):
    summary = run(_cfg(tmp_path))
    assert summary["updates"] == 3
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["policy_loss"]) for r in records if "policy_loss" in r)
