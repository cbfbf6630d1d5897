import pytest
import torch

from mmssl.errors import ShapeError
from mmssl.registry import ENCODERS
from mmssl_envs.digit_grid import DigitGridEnv


def _obs(n=3, **kwargs):
    env = DigitGridEnv(**kwargs)
    batch = [env.reset(seed=i)[0] for i in range(n)]
    return {k: torch.as_tensor(__import__("numpy").stack([b[k] for b in batch])) for k in batch[0]}


def test_goal_map_without_instruction_reads_env_observations():
    enc = ENCODERS.build("goal_map", tile_encoder={"name": "convnet", "in_channels": 1, "width": 4}, dim=32)
    out = enc(_obs(instruction="none"))
    assert out.pooled.shape == (3, 32) and out.tokens.shape == (3, 25, 64)
    out.pooled.sum().backward()
    assert enc.map_net[0].weight.grad is not None
    # without an instruction the goal map is empty: tile content cannot tell the agent where to go
    assert enc.tile_encoder.features[0][0].weight.grad is None


def test_frozen_towers_do_not_change(tmp_path):
    # a pretraining checkpoint with an image tower, as `mmssl pretrain` writes it
    from mmssl import checkpoint

    tower = ENCODERS.build("convnet", in_channels=1, width=4)
    checkpoint.save({"model": {f"encoders.image.{k}": v for k, v in tower.state_dict().items()}, "step": 1},
                    tmp_path / "checkpoints" / "step_00000001.pt")
    enc = ENCODERS.build("goal_map", tile_encoder={"name": "convnet", "in_channels": 1, "width": 4},
                         pretrained=str(tmp_path), freeze=True)
    for a, b in zip(tower.state_dict().values(), enc.tile_encoder.state_dict().values()):
        assert torch.equal(a, b)
    enc.train()
    assert not enc.tile_encoder.training and not any(p.requires_grad for p in enc.tile_encoder.parameters())
    enc(_obs(instruction="none")).pooled.sum().backward()
    assert enc.map_net[0].weight.grad is not None


def test_goal_map_rejects_other_observations():
    enc = ENCODERS.build("goal_map", tile_encoder={"name": "convnet", "in_channels": 1, "width": 4})
    with pytest.raises(ShapeError, match="dict observation"):
        enc(torch.rand(2, 4))
    with pytest.raises(ShapeError, match="multiples of 8"):
        enc({"image": torch.rand(2, 2, 10, 10)})
