"""MAE, I-JEPA and data2vec through the trainer and the CLI: tiny end-to-end runs, exact resume of the EMA
targets, their configs (incl. bf16 autocast), the digits recipes and `mmssl list objectives`."""

import json

import pytest
import torch

from mmssl import checkpoint
from mmssl.build import OBJECTIVE_RUN_KEYS, build_encoders, build_model
from mmssl.cli import main
from mmssl.config import compose, registry_kwargs
from mmssl.errors import ConfigError
from mmssl.logging import RunLogger
from mmssl.registry import OBJECTIVES
from mmssl.train.trainer import Trainer
from mmssl.types import Batch

TINY_VIT = ["encoder=vit_tiny", "encoder.image.width=16", "encoder.image.depth=3", "encoder.image.heads=2"]


def _overrides(run_dir, *extra):
    return [f"run_dir={run_dir}", "logger.mode=disabled", "trainer.warmup_steps=1", "trainer.log_every=1",
            "trainer.progress=false", "data.batch_size=32", "eval.plot=false", "eval.baselines=false", *TINY_VIT,
            *extra]


@pytest.mark.parametrize("objective", ["mae", "ijepa", "data2vec"])
def test_tiny_pretrain_through_the_cli(tmp_path, objective):
    run = tmp_path / objective
    assert main(["pretrain", *_overrides(run, f"objective={objective}", "trainer.steps=3",
                                          "trainer.checkpoint_every=0")]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["train/steps"] == 3
    assert 0.1 < summary["eval/image/ssl/linear_probe_accuracy"] <= 1.0
    losses = [r[f"train/{objective}/loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
              if f"train/{objective}/loss" in r]
    assert len(losses) == 3 and all(v == v and v < 1e6 for v in losses)


def _train(run_dir, objective, *extra, resume=False):
    cfg = compose("pretrain", _overrides(run_dir, f"objective={objective}", "trainer.steps=6",
                                         f"resume={str(resume).lower()}", *extra))
    trainer = Trainer(cfg, run_dir)
    logger = RunLogger(run_dir, None, mode="disabled", resume=resume)
    trainer.fit(logger)
    logger.close()
    return trainer


@pytest.mark.parametrize("objective", ["ijepa", "data2vec"])
def test_resume_is_bit_identical_including_the_ema_target(tmp_path, objective):
    straight = _train(tmp_path / "a", objective, "trainer.checkpoint_every=0")
    _train(tmp_path / "b", objective, "trainer.checkpoint_every=3")
    for p in checkpoint.checkpoints(tmp_path / "b" / "checkpoints"):
        if not p.name.endswith("00000003.pt"):
            p.unlink()
    state = checkpoint.load(tmp_path / "b" / "checkpoints" / "step_00000003.pt")
    key = f"objectives.{objective}.target_encoder.patch_embed.weight"
    assert key in state["model"]
    resumed = _train(tmp_path / "b", objective, "trainer.checkpoint_every=3", resume=True)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert not torch.equal(a[key], state["model"][key])  # the target moved after step 3
    assert not torch.equal(a[key], a["encoders.image.patch_embed.weight"])  # and is an average, not a copy
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.mark.parametrize("name", ["mae", "mae_audio", "ijepa", "data2vec"])
def test_configs_build_and_run_under_bf16_autocast(name):
    encoder = "audio_vit_tiny" if name == "mae_audio" else "vit_tiny"
    cfg = compose("pretrain", [f"objective={name}", f"encoder={encoder}"])
    node = cfg.objective[name]
    assert OBJECTIVES.get(node.name).modalities and node.modality in OBJECTIVES.get(node.name).modalities
    encoders = build_encoders(cfg.encoder)
    objective = OBJECTIVES.build(node.name, encoders, **registry_kwargs(node, OBJECTIVE_RUN_KEYS))
    data = 0.1 * torch.randn(2, 8000) if node.modality == "audio" else torch.rand(4, 1, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = objective(Batch({node.modality: data}), encoders)
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in encoders.parameters() if p.grad is not None)


def _recipe(name, *extra):
    """``recipe=name`` where the recipe group is in pretrain's defaults, else ``+recipe=name`` (appended)."""
    try:
        return compose("pretrain", [f"recipe={name}", *extra])
    except ConfigError:
        return compose("pretrain", [f"+recipe={name}", *extra])


@pytest.mark.parametrize("method", ["mae", "ijepa", "data2vec"])
def test_digits_recipes_compose_and_build(method):
    cfg = _recipe(f"{method}_digits")
    assert list(cfg.objective) == [method] and cfg.encoder.image.name == "vit"
    assert cfg.data.name == "digits" and cfg.encoder.image.image_size == 8
    assert int(cfg.trainer.steps) >= 1000 and cfg.trainer.optimizer == "adamw"
    model = build_model(cfg)
    assert method in model.objectives
    other = _recipe(f"{method}_digits", "trainer.steps=7")  # the command line still wins
    assert int(other.trainer.steps) == 7


def test_list_objectives_shows_the_methods_with_modalities(capsys):
    assert main(["list", "objectives"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert "image,audio" in lines["mae"] and "image,audio" in lines["ijepa"]
    assert "image,audio,text" in lines["data2vec"]
    assert "MAE" in lines["mae"] and "I-JEPA" in lines["ijepa"] and "data2vec" in lines["data2vec"]
