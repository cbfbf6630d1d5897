"""The numpy PPO update (``mmssl.rl.numpy_update``) computes what the autograd update computes.

Each comparison builds two PPO runs from one seed — ``agent.update_engine=numpy`` and ``=torch`` — collects
the same rollout with both and optimises it: the gradients of a minibatch (read before clipping, with
clipping out of reach), the per-minibatch statistics, the parameters and Adam's state afterwards agree to
float32 rounding. Settings cover both policies (Categorical, Gaussian), both activations, value clipping
off, raw advantages, and learning rates at which the ratio clip is hit.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmssl.config import compose
from mmssl.errors import ConfigError, NonFiniteError
from mmssl.rl import numpy_update
from mmssl.rl.ppo import PPO

BASE = ["logger.mode=disabled", "progress=false", "precision=fp32", "agent.num_envs=4", "agent.num_steps=32",
        "agent.total_timesteps=4096", "seed=5"]


def _pair(*extra):
    runs = [PPO(compose("rl", [*BASE, f"agent.update_engine={engine}", *extra])) for engine in ("numpy", "torch")]
    assert runs[0].mlp_update is not None and runs[1].mlp_update is None
    runs[1].agent.load_state_dict(runs[0].agent.state_dict())
    return runs


def _collect(runs):
    out = []
    for ppo in runs:
        torch.manual_seed(11)
        out.append(ppo.collect())
    assert torch.equal(out[0]["rollout"].obs, out[1]["rollout"].obs)  # the rollout does not depend on the engine
    return out


def _optimise(runs, datas):
    stats = []
    for ppo, data in zip(runs, datas):
        torch.manual_seed(12)  # the same minibatch draws
        stats.append(ppo.optimise(data))
    return stats


def _torch_grad(ppo) -> np.ndarray:
    return torch.cat([p.grad.reshape(-1) for p in ppo.params]).numpy()


CASES = {
    "cartpole": [],
    "relu": ["agent_encoder.activation=relu"],
    "plain value loss, raw advantages": ["agent.clip_vloss=false", "agent.norm_adv=false"],
    "pendulum": ["env=pendulum", "agent.normalize_obs=true"],
}


@pytest.mark.parametrize("extra", CASES.values(), ids=CASES.keys())
def test_minibatch_gradients_and_statistics_match_autograd(extra):
    # three epochs of one minibatch at a high learning rate: after the first the ratio clip is active
    runs = _pair(*extra, "agent.num_minibatches=1", "agent.update_epochs=3", "agent.learning_rate=0.05",
                 "agent.max_grad_norm=1e9", "agent.anneal_lr=false")
    try:
        stats = _optimise(runs, _collect(runs))
        assert max(stats[1]["clipfrac"]) > 0  # the clipped branches were exercised
        np.testing.assert_allclose(runs[0].mlp_update.grad, _torch_grad(runs[1]), rtol=2e-3, atol=2e-6)
        for key, values in stats[1].items():
            np.testing.assert_allclose(stats[0][key], values, rtol=2e-3, atol=2e-6, err_msg=key)
        for (name, a), (_, b) in zip(runs[0].agent.named_parameters(), runs[1].agent.named_parameters()):
            # Adam moves a weight whose gradient is rounding noise by up to lr·|g|/eps: 1e-3 of lr here
            torch.testing.assert_close(a, b, rtol=1e-4, atol=5e-5, msg=lambda m, name=name: f"{name}: {m}")
    finally:
        for ppo in runs:
            ppo.close()


@pytest.mark.parametrize("extra", [[], ["env=pendulum"]], ids=["cartpole", "pendulum"])
def test_a_whole_update_leaves_the_same_parameters_and_adam_state(extra):
    runs = _pair(*extra)  # CleanRL's defaults: 4 epochs × 4 minibatches, clipping at 0.5, annealed lr
    try:
        for update in range(2):
            torch.manual_seed(11)
            data = runs[0].collect()  # one rollout for both (a Gaussian policy's rollouts drift apart by rounding)
            stats = _optimise(runs, [data, data])
            np.testing.assert_allclose(stats[0]["grad_norm"], stats[1]["grad_norm"], rtol=1e-4)
            for (name, a), (_, b) in zip(runs[0].agent.named_parameters(), runs[1].agent.named_parameters()):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}")
            state_a, state_b = (ppo.optimizer.state_dict()["state"] for ppo in runs)
            assert state_a.keys() == state_b.keys()
            for i in state_a:
                assert float(state_a[i]["step"]) == float(state_b[i]["step"]) == 16.0 * (update + 1)
                for key in ("exp_avg", "exp_avg_sq"):
                    torch.testing.assert_close(state_a[i][key], state_b[i][key], rtol=1e-4, atol=1e-9)
    finally:
        for ppo in runs:
            ppo.close()


def test_engines_interleave_through_the_torch_optimizer_state():
    """An update by one engine continues from the other's: the state lives in the agent and torch's Adam."""
    runs = _pair()
    try:
        datas = _collect(runs)
        _optimise(runs, datas)
        runs[0].mlp_update, runs[1].mlp_update = None, numpy_update.MLPUpdate(runs[1].agent, runs[1].optimizer)
        _optimise(runs, datas)  # now the first run updates through autograd, the second in numpy
        for (name, a), (_, b) in zip(runs[0].agent.named_parameters(), runs[1].agent.named_parameters()):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}")
    finally:
        for ppo in runs:
            ppo.close()


@pytest.mark.parametrize("extra, reason", [
    (["objective=rl_inverse_dynamics"], "auxiliary objectives"),
    (["agent.separate_critic=false"], "not separate MLP actor and critic"),
    (["agent.head_hidden=16"], "not separate MLP actor and critic"),
    (["intrinsic=rnd", "intrinsic_integration=value_head"], "intrinsic value head"),
    (["precision=bf16"], "precision is bf16"),
])
def test_agents_the_numpy_engine_does_not_cover_use_autograd_or_are_refused(extra, reason):
    ppo = PPO(compose("rl", [*BASE, *extra]))
    assert ppo.mlp_update is None
    ppo.close()
    with pytest.raises(ConfigError, match=f"agent.update_engine=numpy cannot run this agent: .*{reason}"):
        PPO(compose("rl", [*BASE, "agent.update_engine=numpy", *extra]))


def test_auto_picks_numpy_and_fp32_without_a_probe(monkeypatch):
    monkeypatch.delenv("MMSSL_AUTO_PRECISION", raising=False)
    ppo = PPO(compose("rl", [*BASE[:2], "agent.num_steps=8", "agent.total_timesteps=64"]))
    assert ppo.mlp_update is not None
    assert (ppo.precision.name, ppo.precision.source, ppo.precision.probe) == ("fp32", "numpy update engine", {})
    ppo.close()
    with pytest.raises(ConfigError, match="agent.update_engine must be one of"):
        PPO(compose("rl", [*BASE, "agent.update_engine=jax"]))


def test_nonfinite_loss_stops_before_any_weight_changes(monkeypatch):
    ppo = PPO(compose("rl", BASE))
    before = {k: v.clone() for k, v in ppo.agent.state_dict().items()}
    data = ppo.collect()
    data["returns"] = data["returns"] * float("nan")
    with pytest.raises(NonFiniteError, match=r"non-finite loss \(value_loss\) at update 1 \(epoch 1, minibatch 1\)"):
        ppo.optimise(data)
    assert all(torch.equal(before[k], v) for k, v in ppo.agent.state_dict().items())
    ppo.close()


def test_nonfinite_gradient_names_the_parameter(monkeypatch):
    ppo = PPO(compose("rl", BASE))
    before = {k: v.clone() for k, v in ppo.agent.state_dict().items()}
    real = numpy_update.MLPUpdate._backward

    def backward(self, layers, grads, inputs, d_out):
        real(self, layers, grads, inputs, d_out)
        if layers is self.critic:
            grads[-1][0][...] = np.inf  # the value head's weight
    monkeypatch.setattr(numpy_update.MLPUpdate, "_backward", backward)
    with pytest.raises(NonFiniteError, match=r"non-finite gradient in critic\.weight at update 1 \(epoch 1, minibatch 1\)"):
        ppo.update()
    assert all(torch.equal(before[k], v) for k, v in ppo.agent.state_dict().items())
    ppo.close()
