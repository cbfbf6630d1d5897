"""configs/recipe/: every recipe composes, builds its model and optimiser and runs one optimiser step; the
command line wins over a recipe, a recipe over the defaults; one recipe trains end to end (LARS)."""

import json
from pathlib import Path

import pytest
import torch

from mmssl.build import build_model
from mmssl.cli import main
from mmssl.config import compose, config_dir
from mmssl.train.optim import LARS
from mmssl.train.trainer import make_optimizer
from mmssl.types import Batch
from tests.conftest import tiny_overrides

RECIPES = sorted(p.stem for p in Path(config_dir(), "recipe").glob("*.yaml"))
#: the image objectives that have a recipe for each of the three image data sets
IMAGE_METHODS = ("simclr", "dcl", "moco_v2", "moco_v3", "byol", "simsiam", "barlow_twins", "vicreg", "triplet",
                 "masked_image", "rotation", "autoencoder", "vae", "cpc", "context_encoder", "bigan", "dino", "swav",
                 "deepcluster_v2", "nnclr", "mae", "ijepa", "data2vec")
#: image side per data set, for a forward pass on random images of the recipe's shape
IMAGE_SIDE = {"digits": 8, "fashion_mnist": 28, "torchvision": 32}


def test_every_image_method_has_a_recipe_per_data_set():
    missing = [f"{m}_{d}" for m in IMAGE_METHODS for d in ("digits", "fashion_mnist", "cifar") if f"{m}_{d}" not in RECIPES]
    assert not missing, missing
    assert "colorization_cifar" in RECIPES


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_composes_builds_and_runs_one_step(recipe):
    header = Path(config_dir(), "recipe", f"{recipe}.yaml").read_text().splitlines()[0]
    assert header == "# @package _global_", recipe
    cfg = compose("pretrain", [f"recipe={recipe}"])
    method = recipe.rsplit("_", 1)[0].removesuffix("_fashion")  # e.g. simclr_fashion_mnist → simclr
    assert any(node.name == method for node in cfg.objective.values()), (recipe, list(cfg.objective))
    defaults = compose("pretrain", [f"objective={method}"]) if method in IMAGE_METHODS else None
    if defaults is not None:  # the recipe really overrides the defaults it is about
        assert (cfg.trainer, cfg.data) != (defaults.trainer, defaults.data)
    torch.manual_seed(0)
    model = build_model(cfg)
    optimizer = make_optimizer(model, cfg.trainer)
    assert isinstance(optimizer, LARS) == (cfg.trainer.optimizer == "lars")
    side = IMAGE_SIDE.get(cfg.data.name)
    if side is None or "image" not in cfg.encoder:
        return
    channels = int(cfg.encoder.image.get("in_channels", 3))
    # index/epoch as the data iterator sets them (deepcluster_v2's memory bank reads them)
    batch = Batch({"image": torch.rand(4, channels, side, side)}, torch.tensor([0, 1, 0, 1]),
                  extra={"index": torch.arange(4), "epoch": torch.zeros(4, dtype=torch.long)})
    loss, _ = model(batch)
    assert torch.isfinite(loss)
    before = [p.detach().clone() for p in model.parameters() if p.requires_grad]
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    params = [p for p in model.parameters() if p.requires_grad]
    moved = any(not torch.equal(a, p.detach()) for a, p in zip(before, params, strict=True))
    # the step moves the weights wherever the loss has a gradient (deepcluster_v2 has none before its first k-means)
    assert moved or not any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in params), recipe


def test_command_line_wins_over_recipe_and_recipe_over_defaults():
    plain = compose("pretrain", [])
    assert "recipe" not in plain and plain.trainer.optimizer == "adamw"
    cfg = compose("pretrain", ["recipe=simclr_digits"])
    assert (cfg.trainer.optimizer, cfg.trainer.lr, cfg.objective.simclr.temperature) == ("lars", 0.3, 0.5)
    cfg = compose("pretrain", ["recipe=simclr_digits", "data=fashion_mnist", "trainer.lr=0.1",
                               "objective.simclr.temperature=0.2"])
    assert cfg.data.name == "fashion_mnist" and cfg.trainer.lr == 0.1 and cfg.objective.simclr.temperature == 0.2
    assert cfg.trainer.optimizer == "lars"  # the rest of the recipe still applies


def test_unknown_recipe_suggests_close_names(capsys):
    assert main(["pretrain", "recipe=simclr_digit"]) == 2
    err = capsys.readouterr().err
    assert "unknown recipe 'simclr_digit'" in err and "simclr_digits" in err


def test_tiny_recipe_run_with_lars(tmp_path):
    run = tmp_path / "run"
    assert main(["pretrain", "recipe=simclr_digits", *tiny_overrides(run)]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["train/steps"] == 6 and 0.1 < summary["eval/image/ssl/linear_probe_accuracy"] <= 1.0
    import yaml

    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["trainer"]["optimizer"] == "lars" and saved["objective"]["simclr"]["temperature"] == 0.5
