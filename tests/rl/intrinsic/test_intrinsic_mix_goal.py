"""The weighted mix and the cross-modal goal-similarity reward."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from mmssl import checkpoint
from mmssl.errors import ConfigError
from mmssl.registry import ENCODERS, INTRINSIC_REWARDS
from mmssl.rl.storage import Rollout
from mmssl.types import EncoderOutput

from .conftest import ACTIONS, SPACES, make_rollout, step


def test_mix_is_the_weighted_sum_of_its_parts_and_logs_each():
    space = SPACES["minigrid"]
    parts = {"counts": {"weight": 2.0}, "novelty": {"name": "re3", "weight": 0.5, "coef": 0.3, "embed_dim": 8}}
    torch.manual_seed(3)
    mix = INTRINSIC_REWARDS.build("mix", space, ACTIONS, 2, rewards=parts)
    torch.manual_seed(3)
    counts = INTRINSIC_REWARDS.build("counts", space, ACTIONS, 2)
    re3 = INTRINSIC_REWARDS.build("re3", space, ACTIONS, 2, coef=0.3, embed_dim=8)
    rollout = make_rollout(space, T=5, done_every=2)
    for t in range(5):
        mix.watch(*step(rollout, t))
    counts_bonus, re3_bonus = counts.compute(rollout), re3.compute(rollout)
    torch.testing.assert_close(mix.compute(rollout), 2.0 * counts_bonus + 0.5 * re3_bonus)
    metrics = mix.update(rollout)
    assert metrics["counts/bonus_mean"] == pytest.approx(counts_bonus.mean().item())
    assert metrics["novelty/bonus_mean"] == pytest.approx(re3_bonus.mean().item())
    assert {"counts/bonus_mean", "novelty/bonus_mean", "novelty/coef"} <= set(metrics)
    assert mix.memory_size() == counts.memory_size() > 0


def test_mix_rejects_bad_parts():
    with pytest.raises(ConfigError, match="unknown intrinsic reward 'rnnd'"):
        INTRINSIC_REWARDS.build("mix", SPACES["vector"], ACTIONS, 1, rewards={"rnnd": {}})
    with pytest.raises(ConfigError, match="needs rewards"):
        INTRINSIC_REWARDS.build("mix", SPACES["vector"], ACTIONS, 1)


COLOURS = torch.eye(3)  # token id i ↔ colour i (red, green, blue)
SPACE = gym.spaces.Dict({"image": gym.spaces.Box(0, 255, (4, 4, 3), np.uint8),
                         "mission": gym.spaces.Box(0, 2, (1,), np.int64)})


class MeanColour(nn.Module):
    """Hand-made image tower: (B, 3, H, W) → its mean colour (B, 3)."""

    def forward(self, x):
        return EncoderOutput(pooled=x.mean((2, 3)))


class ColourWord(nn.Module):
    """Hand-made text tower: (B, 1) token id → that colour's one-hot (B, 3)."""

    def forward(self, tokens):
        return EncoderOutput(pooled=COLOURS[tokens[:, 0]])


def frames(colour_ids):
    """(B, 4, 4, 3) uint8 frames filled with mostly one colour (plus a little of every colour)."""
    return (COLOURS[torch.tensor(colour_ids)] * 200 + 20)[:, None, None, :].expand(-1, 4, 4, 3).to(torch.uint8)


def goal_rollout(obs_colours, next_colours, missions):
    T = 1
    wrap = lambda c: {"image": frames(c)[None], "mission": torch.tensor(missions)[None, :, None]}  # noqa: E731
    return Rollout(obs=wrap(obs_colours), next_obs=wrap(next_colours), actions=torch.zeros(T, len(missions)),
                   rewards=torch.zeros(T, len(missions)), dones=torch.zeros(T, len(missions)))


def build_goal(**cfg):
    return INTRINSIC_REWARDS.build("goal_similarity", SPACE, ACTIONS, 3, coef=1.0,
                                   encoders={"image": MeanColour(), "text": ColourWord()}, **cfg)


def test_goal_similarity_is_higher_for_the_matching_goal():
    reward = build_goal()
    bonus = reward.compute(goal_rollout([0, 0, 0], [0, 1, 2], missions=[0, 0, 0]))[0]  # mission "red" everywhere
    assert bonus[0] > 0.9 and bonus[0] > bonus[1] + 0.5 and bonus[0] > bonus[2] + 0.5
    swapped = reward.compute(goal_rollout([0, 0, 0], [0, 1, 2], missions=[1, 1, 2]))[0]
    assert swapped[1] > swapped[0] and swapped[2] > swapped[0]
    # frozen embeddings are remembered (bounded), and the size is what update() logs
    assert 0 < reward.memory_size() <= 2 * reward.memo_obs.max_entries
    assert reward.update(goal_rollout([0, 0, 0], [0, 1, 2], missions=[0, 0, 0]))["memory_size"] == reward.memory_size()


def test_goal_similarity_increase_mode_and_fixed_goal():
    reward = build_goal(mode="increase", goal=[2])
    bonus = reward.compute(goal_rollout([0, 2, 1], [2, 2, 0], missions=[0, 0, 0]))[0]  # missions ignored
    assert bonus[0] > 0.5 and bonus[1].abs() < 1e-6 and bonus[2].abs() < 0.1


def test_goal_similarity_loads_encoders_from_a_pretraining_checkpoint(tmp_path):
    image = ENCODERS.build("convnet", in_channels=3, width=4).eval()
    spec = {"name": "convnet", "in_channels": 3, "width": 4}
    projection = nn.Linear(image.dim, 6)
    state = {"model": {**{f"encoders.image.{k}": v for k, v in image.state_dict().items()},
                       **{f"objectives.bind.projections.image.{k}": v for k, v in projection.state_dict().items()}},
             "config": {"encoder": {"image": spec}}}
    path = checkpoint.save(state, tmp_path / "checkpoints" / "step_00000001.pt")
    space = gym.spaces.Dict({"image": SPACE["image"]})
    # goal as an image (fixed); the bonus must be the cosine computed by hand with the saved weights
    pictures = torch.randint(0, 256, (3, 4, 4, 3), dtype=torch.uint8)
    goal = (pictures[0].permute(2, 0, 1).float() / 255).tolist()
    reward = INTRINSIC_REWARDS.build("goal_similarity", space, ACTIONS, 3, coef=1.0, checkpoint=str(tmp_path),
                                     goal_modality="image", goal=goal)  # a run folder: its newest checkpoint
    torch.testing.assert_close(reward.projections["image"].weight, projection.weight)
    assert reward.embed("image", torch.rand(2, 3, 4, 4)).shape == (2, 6)  # the joint space of the projection
    obs = {"image": pictures[None]}
    rollout = Rollout(obs=obs, next_obs=obs, actions=torch.zeros(1, 3), rewards=torch.zeros(1, 3),
                      dones=torch.zeros(1, 3))
    bonus = reward.compute(rollout)[0]
    with torch.no_grad():
        z = torch.nn.functional.normalize(projection(image(pictures.permute(0, 3, 1, 2).float() / 255).pooled), dim=-1)
    torch.testing.assert_close(bonus, z @ z[0], rtol=1e-4, atol=1e-5)
    assert bonus[0] == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ConfigError, match="has encoders for \\['image'\\], not 'text'"):
        INTRINSIC_REWARDS.build("goal_similarity", space, ACTIONS, 3, checkpoint=str(path), goal=[1])


class Brightness(nn.Module):
    """Hand-made tile tower: (B, 1, t, t) → [bright, dim] one-hot by mean intensity."""

    def forward(self, x):
        bright = (x.mean((1, 2, 3)) > 0.5).float()
        return EncoderOutput(pooled=torch.stack([bright, 1 - bright], -1))


def test_goal_similarity_on_the_tile_under_the_agent():
    space = gym.spaces.Dict({"image": gym.spaces.Box(0, 255, (2, 16, 16), np.uint8),
                             "instruction": gym.spaces.Box(0, 1, (1,), np.int64)})
    words = nn.Module()
    words.forward = lambda tokens: EncoderOutput(pooled=torch.eye(2)[tokens[:, 0]])  # 0 "bright", 1 "dim"
    reward = INTRINSIC_REWARDS.build("goal_similarity", space, ACTIONS, 2, coef=1.0, goal_key="instruction",
                                     encoders={"image": Brightness(), "text": words}, agent_tile=8)
    image = torch.zeros(1, 2, 2, 16, 16, dtype=torch.uint8)
    image[..., 0, :8, :8] = 230  # top-left tile bright, bottom-right tile dim
    image[..., 0, 8:, 8:] = 40
    image[0, 0, 1, :8, :8] = 255  # env 0 stands on the bright tile, env 1 on the dim one
    image[0, 1, 1, 8:, 8:] = 255
    obs = {"image": image, "instruction": torch.zeros(1, 2, 1, dtype=torch.long)}  # both told "bright"
    rollout = Rollout(obs=obs, next_obs=obs, actions=torch.zeros(1, 2), rewards=torch.zeros(1, 2),
                      dones=torch.zeros(1, 2))
    bonus = reward.compute(rollout)[0]
    assert bonus.tolist() == pytest.approx([1.0, 0.0])


@pytest.mark.parametrize("batch_norm", [False, True])
def test_projection_heads_are_rebuilt_from_their_weights(batch_norm):
    from mmssl.encoders.heads import mlp
    from mmssl.rl.intrinsic.goal_similarity import projection_from_state

    head = mlp(12, 16, 5, layers=3, batch_norm=batch_norm).eval()
    with torch.no_grad():
        for p in head.parameters():
            p.normal_()
    rebuilt = projection_from_state(head.state_dict(), what="image projection").eval()
    x = torch.randn(4, 12)
    torch.testing.assert_close(rebuilt(x), head(x))
    with pytest.raises(ConfigError, match="cannot rebuild the image projection"):
        projection_from_state({"0.weight": torch.zeros(3)}, what="image projection")
