"""GAE on a hand-computed case and each PPO loss term."""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch.distributions import Categorical, Normal

from mmssl.errors import ShapeError
from mmssl.rl.agent import Agent
from mmssl.rl.ppo import explained_variance, gae, normalise_advantages, policy_loss, value_loss


def test_gae_matches_hand_computation():
    # γ = 0.9, λ = 0.8; the episode ends at t = 1, so t = 0 sees V(o_1) but t = 1 bootstraps nothing
    rewards = torch.tensor([[1.0], [1.0], [1.0]])
    values = torch.full((3, 1), 0.5)
    dones = torch.tensor([[0.0], [1.0], [0.0]])
    adv, ret = gae(rewards, values, dones, torch.tensor([2.0]), gamma=0.9, lam=0.8)
    # t=2: δ = 1 + .9·2 − .5 = 2.3; t=1: δ = 1 − .5 = .5 (terminal); t=0: δ = 1 + .9·.5 − .5 = .95, A = .95 + .72·.5
    assert torch.allclose(adv.squeeze(1), torch.tensor([1.31, 0.5, 2.3]))
    assert torch.allclose(ret.squeeze(1), torch.tensor([1.81, 1.0, 2.8]))


def test_gae_with_lambda_one_is_discounted_return_minus_value():
    rewards = torch.tensor([[1.0], [2.0], [3.0]])
    values = torch.tensor([[0.3], [0.1], [0.2]])
    adv, _ = gae(rewards, values, torch.zeros(3, 1), torch.tensor([0.0]), gamma=0.5, lam=1.0)
    mc = torch.tensor([1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3.0])
    assert torch.allclose(adv.squeeze(1), mc - values.squeeze(1))


def test_policy_loss_is_minus_advantage_at_ratio_one_and_clips():
    adv = torch.tensor([1.0, -2.0])
    logp = torch.tensor([-1.0, -0.5])
    loss, stats = policy_loss(logp, logp, adv, clip_coef=0.2)
    assert loss.item() == pytest.approx(-adv.mean().item())
    assert stats["clipfrac"] == 0.0 and stats["approx_kl"] == pytest.approx(0.0)
    # ratio e^0.5 ≈ 1.65: a positive advantage is clipped at 1.2, a negative one is not (pessimistic bound)
    new = logp + 0.5
    loss, stats = policy_loss(new, logp, adv, clip_coef=0.2)
    expected = (-1.0 * 1.2 + 2.0 * math.exp(0.5)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert stats["clipfrac"] == 1.0 and stats["approx_kl"] > 0


def test_policy_loss_gradient_vanishes_when_clipped():
    new = torch.tensor([0.5], requires_grad=True)
    loss, _ = policy_loss(new, torch.tensor([0.0]), torch.tensor([1.0]), clip_coef=0.2)
    loss.backward()
    assert new.grad.item() == 0.0


def test_value_loss_plain_and_clipped():
    new, old, ret = torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([1.0])
    assert value_loss(new, old, ret, 0.2, clip=False).item() == pytest.approx(0.0)
    # clipped prediction 0.2 is 0.8 away from the return: 0.5·0.8² = 0.32
    assert value_loss(new, old, ret, 0.2, clip=True).item() == pytest.approx(0.32)
    assert value_loss(torch.tensor([3.0]), torch.tensor([0.0]), ret, 0.2, clip=False).item() == pytest.approx(2.0)


def test_advantage_normalisation_and_explained_variance():
    adv = normalise_advantages(torch.tensor([1.0, 2.0, 3.0, 10.0]))
    assert adv.mean().abs() < 1e-6 and adv.std().item() == pytest.approx(1.0, abs=1e-5)
    ret = torch.tensor([1.0, 2.0, 3.0])
    assert explained_variance(ret, ret) == pytest.approx(1.0)
    assert explained_variance(torch.zeros(3), ret) == pytest.approx(0.0)


def test_entropy_term_of_a_fresh_policy():
    obs_space = gym.spaces.Box(-1, 1, (4,), np.float32)
    agent = Agent(obs_space, gym.spaces.Discrete(3), {"name": "mlp"})
    step = agent.evaluate(torch.randn(8, 4), torch.zeros(8, dtype=torch.long))
    # policy head initialised with gain 0.01: nearly uniform, entropy ≈ log 3
    assert step.entropy.mean().item() == pytest.approx(math.log(3), abs=1e-3)
    cont = Agent(obs_space, gym.spaces.Box(-2, 2, (2,), np.float32), {"name": "mlp"})
    s = cont.act(torch.randn(5, 4), entropy=True)
    assert s.action.shape == (5, 2)
    # diagonal Gaussian with σ = 1 per dimension: entropy 2·½·log(2πe)
    assert s.entropy[0].item() == pytest.approx(math.log(2 * math.pi * math.e), rel=1e-5)


@pytest.mark.parametrize("space", [gym.spaces.Discrete(5), gym.spaces.Box(-2, 2, (3,), np.float32)])
def test_written_out_policy_matches_torch_distributions(space):
    torch.manual_seed(0)
    agent = Agent(gym.spaces.Box(-1, 1, (4,), np.float32), space, {"name": "mlp"})
    with torch.no_grad():
        agent.actor.weight.normal_()  # a far-from-uniform policy
        if not agent.discrete:
            agent.actor_logstd.uniform_(-1, 1)
    obs = torch.randn(64, 4)
    step = agent.act(obs, generator=torch.Generator().manual_seed(1), entropy=True)
    out = agent.actor(agent.features(obs))  # the reference: torch.distributions on the same actor output
    dist = Categorical(logits=out) if agent.discrete else Normal(out, agent.actor_logstd.expand_as(out).exp())
    logprob, entropy = dist.log_prob(step.action), dist.entropy()
    if not agent.discrete:
        logprob, entropy = logprob.sum(-1), entropy.sum(-1)
    torch.testing.assert_close(step.logprob, logprob)
    torch.testing.assert_close(step.entropy, entropy)
    again = agent.evaluate(obs, step.action)
    torch.testing.assert_close(again.logprob, logprob)
    mode = agent.act(obs, deterministic=True).action
    torch.testing.assert_close(mode, dist.probs.argmax(-1) if agent.discrete else dist.mean)
    if agent.discrete:  # sampled actions follow the policy: empirical frequencies ≈ probabilities
        many = agent.act(obs[:1].expand(4000, 4), generator=torch.Generator().manual_seed(2)).action
        freq = torch.bincount(many, minlength=5).float() / 4000
        torch.testing.assert_close(freq, dist.probs[0], atol=0.03, rtol=0)


@pytest.mark.parametrize("separate_critic,head_hidden,intrinsic,space", [
    (True, 0, False, gym.spaces.Discrete(3)),  # CleanRL's classic-control agent: trunks fused
    (True, 0, True, gym.spaces.Box(-1, 1, (2,), np.float32)),
    (False, 0, True, gym.spaces.Discrete(3)),  # shared trunk: heads stacked
    (True, 16, False, gym.spaces.Discrete(3)),  # MLP heads: no wide network, the module path
])
def test_rollout_wide_network_matches_the_modules(separate_critic, head_hidden, intrinsic, space):
    torch.manual_seed(0)
    agent = Agent(gym.spaces.Box(-1, 1, (4,), np.float32), space, {"name": "mlp", "activation": "relu"},
                  separate_critic=separate_critic, head_hidden=head_hidden, intrinsic_value_head=intrinsic)
    assert (agent._wide() is None) == (head_hidden > 0)
    obs = torch.randn(32, 4)
    optimizer = torch.optim.Adam(agent.parameters(), lr=0.1)
    for _ in range(2):  # the wide weights follow an optimiser step
        with torch.no_grad():
            fast = agent.act(obs, generator=torch.Generator().manual_seed(3))
            # discrete policies on separate MLP trunks take the numpy path (Agent._act_numpy)
            assert agent._numpy_rollout(obs) == (separate_critic and head_hidden == 0 and agent.discrete)
        slow = agent.act(obs, generator=torch.Generator().manual_seed(3))  # autograd on: the module path
        torch.testing.assert_close(fast.features, slow.features)
        torch.testing.assert_close(fast.value, slow.value)
        torch.testing.assert_close(fast.logprob, slow.logprob)
        torch.testing.assert_close(fast.action, slow.action)
        assert (fast.value_int is None) == (not intrinsic)
        if intrinsic:
            torch.testing.assert_close(fast.value_int, slow.value_int)
        optimizer.zero_grad()
        (slow.value.sum() + slow.logprob.sum()).backward()
        optimizer.step()
    with torch.no_grad(), pytest.raises(ShapeError, match="mlp expects vector observations"):
        agent.act(torch.randn(2, 5))
