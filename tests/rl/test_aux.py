"""Every auxiliary objective runs on a rollout batch and moves the agent's encoder."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from mmssl.errors import ConfigError
from mmssl.rl.agent import Agent
from mmssl.rl.aux import build_aux_objectives, rollout_batch

PIXELS = gym.spaces.Box(0, 255, (3, 16, 16), np.uint8)
ACTIONS = gym.spaces.Discrete(3)
SPECS = {
    "curl": {"name": "curl"},
    "atc": {"name": "atc", "latent_dim": 16, "hidden_dim": 32},
    "spr": {"name": "spr", "projection_dim": 16, "hidden_dim": 32},
    "inverse_dynamics": {"name": "inverse_dynamics", "hidden_dim": 32},
    "obs_reconstruction": {"name": "obs_reconstruction", "hidden_dim": 32},
    "simclr": {"name": "simclr", "augment": "random_shift", "projection_dim": 16, "hidden_dim": 32},
    "moco_v3": {"name": "moco_v3", "augment": "random_shift", "projection_dim": 16, "hidden_dim": 32},
}


def _batch(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randint(0, 256, (n, 3, 16, 16), generator=g, dtype=torch.uint8)
    next_obs = torch.roll(obs, 1, dims=3)
    actions = torch.randint(0, 3, (n,), generator=g)
    return rollout_batch(obs, next_obs, actions, torch.zeros(n))


@pytest.mark.parametrize("slot", list(SPECS))
def test_aux_objective_runs_on_rollout_and_moves_encoder(slot):
    agent = Agent(PIXELS, ACTIONS, {"name": "impala_cnn", "channels": [8], "dim": 32})
    objectives, weights = build_aux_objectives({slot: {**SPECS[slot], "weight": 0.5}}, agent.encoders, PIXELS, ACTIONS)
    assert weights == {slot: 0.5}
    objective = objectives[slot]
    params = [p for p in [*agent.parameters(), *objective.parameters()] if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=1e-3)
    before = [p.detach().clone() for p in agent.encoder.parameters()]
    out = objective(_batch(), agent.encoders)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    optimizer.zero_grad()
    out.loss.backward()
    optimizer.step()
    objective.after_step(agent.encoders, 0.5)
    moved = sum((p - b).abs().sum().item() for p, b in zip(agent.encoder.parameters(), before))
    assert moved > 0


def test_momentum_copy_follows_the_encoder():
    agent = Agent(PIXELS, ACTIONS, {"name": "impala_cnn", "channels": [8], "dim": 32})
    objectives, _ = build_aux_objectives({"curl": {"name": "curl", "momentum": 0.5}}, agent.encoders, PIXELS, ACTIONS)
    curl = objectives["curl"]
    with torch.no_grad():
        for p in agent.encoder.parameters():
            p.add_(1.0)
    target_before = [p.clone() for p in curl.target_encoder.parameters()]
    curl.after_step(agent.encoders, 0.1)
    for t, b, o in zip(curl.target_encoder.parameters(), target_before, agent.encoder.parameters()):
        assert torch.allclose(t, 0.5 * b + 0.5 * o)


def test_inverse_dynamics_learns_actions_from_vector_transitions():
    space = gym.spaces.Box(-5, 5, (4,), np.float32)
    agent = Agent(space, ACTIONS, {"name": "mlp"})
    objectives, _ = build_aux_objectives({"inv": {"name": "inverse_dynamics"}}, agent.encoders, space, ACTIONS)
    optimizer = torch.optim.Adam([*agent.encoder.parameters(), *objectives.parameters()], lr=3e-3)
    g = torch.Generator().manual_seed(1)
    obs = torch.randn(128, 4, generator=g)
    actions = torch.randint(0, 3, (128,), generator=g)
    next_obs = obs + torch.nn.functional.one_hot(actions, 4).float()  # action a moves coordinate a
    batch = rollout_batch(obs, next_obs, actions, torch.zeros(128))
    for _ in range(150):
        out = objectives["inv"](batch, agent.encoders)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    assert out.metrics["accuracy"] > 0.9


def test_objective_for_another_modality_is_refused():
    agent = Agent(PIXELS, ACTIONS, {"name": "impala_cnn", "channels": [8], "dim": 32})
    with pytest.raises(ConfigError, match="modality"):
        build_aux_objectives({"s": {"name": "simclr", "modality": "image"}}, agent.encoders, PIXELS, ACTIONS)
