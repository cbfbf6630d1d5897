"""Several objectives on one encoder: the run's loss is the weighted sum, and every term is logged."""

import json

import pytest
import torch

from mmssl.build import SSLModel
from mmssl.config import compose
from mmssl.logging import RunLogger
from mmssl.registry import OBJECTIVES
from mmssl.train.trainer import Trainer
from tests.conftest import tiny_overrides
from tests.objectives.conftest import make_batch, make_encoders


def test_weighted_sum_and_both_gradients_reach_the_shared_encoder():
    encoders = make_encoders("image")
    objectives = {"simclr": OBJECTIVES.build("simclr", encoders, hidden_dim=16, projection_dim=8,
                                             augment="gaussian_noise"),
                  "rotation": OBJECTIVES.build("rotation", encoders, hidden_dim=8)}
    model = SSLModel(encoders, objectives, {"simclr": 1.0, "rotation": 0.5})
    total, outputs = model(make_batch("image", 6))
    assert total.item() == pytest.approx(outputs["simclr"].loss.item() + 0.5 * outputs["rotation"].loss.item())
    params = list(encoders.parameters())
    g_simclr = torch.autograd.grad(outputs["simclr"].loss, params, retain_graph=True)
    g_rotation = torch.autograd.grad(outputs["rotation"].loss, params, retain_graph=True)
    g_total = torch.autograd.grad(total, params)
    for a, b, t in zip(g_simclr, g_rotation, g_total):
        assert torch.allclose(t, a + 0.5 * b, atol=1e-6)
    assert sum(g.abs().sum() for g in g_simclr) > 0 and sum(g.abs().sum() for g in g_rotation) > 0
    assert set(model.objectives["simclr"].state_dict()).isdisjoint({f"encoders.{k}" for k in encoders.state_dict()})


def test_two_objectives_from_the_config_group_are_each_logged(tmp_path):
    run = tmp_path / "run"
    cfg = compose("pretrain", [*tiny_overrides(run), "objective=[simclr,rotation]", "objective.rotation.weight=0.5",
                               "objective.simclr.hidden_dim=16", "objective.simclr.projection_dim=8",
                               "objective.rotation.hidden_dim=8", "trainer.checkpoint_every=0"])
    logger = RunLogger(run, None, mode="disabled")
    Trainer(cfg, run).fit(logger)  # the CLI's training loop, without its final probes
    logger.close()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in records if "train/loss" in r]
    assert len(logged) == 3
    for r in logged:
        assert {"train/simclr/loss", "train/rotation/loss", "train/rotation/rotation_accuracy",
                "train/simclr/positive_accuracy"} <= set(r)
        assert r["train/loss"] == pytest.approx(r["train/simclr/loss"] + 0.5 * r["train/rotation/loss"], rel=1e-5)
