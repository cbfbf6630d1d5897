"""experiments/objectives/run.py: the per-objective lr table follows the digits recipes (TTUR the right way
round for BiGAN), and --plot-only redraws a committed results JSON without any run folder."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import yaml

from mmssl.config import config_dir

ROOT = Path(__file__).resolve().parents[1]


def _study():
    spec = importlib.util.spec_from_file_location("objectives_study", ROOT / "experiments/objectives/run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_lr_table_follows_the_adamw_recipes_and_ttur():
    study = _study()
    assert study.study_optimiser("dino") == {"lr": 5e-4}  # not the uniform 2e-3 at which it collapsed
    assert study.study_optimiser("simclr") == {"lr": study.UNIFORM_LR}  # a LARS recipe: its lr is no AdamW lr
    assert study.study_optimiser("dino", "uniform") == {"lr": study.UNIFORM_LR}
    bigan = study.study_optimiser("bigan")
    discriminator_lr = yaml.safe_load(Path(config_dir(), "objective", "bigan.yaml").read_text())["bigan"]["discriminator_lr"]
    assert bigan["betas"] == [0.5, 0.999] and bigan["lr"] < discriminator_lr  # TTUR: D learns faster


def test_dino_on_the_conv_net_gets_its_recipes_batch_norm_head_in_its_own_folders():
    study = _study()
    recipe = yaml.safe_load(Path(config_dir(), "recipe", "dino_digits.yaml").read_text())
    suffix, overrides = study.STUDY_OVERRIDES[("dino", "convnet")]
    assert overrides == [f"objective.dino.use_bn_in_head={str(recipe['objective']['dino']['use_bn_in_head']).lower()}"]
    conv = type("Args", (), dict(steps=100, data="digits", encoder="convnet", lr_from="recipe", precision="auto"))
    vit = type("Args", (), dict(steps=100, data="digits", encoder="vit", lr_from="recipe", precision="auto"))
    assert study.folder(conv, "dino", 0) == f"runs/objectives/digits_100steps/dino_lr0.0005{suffix}/seed0"
    assert study.folder(vit, "dino", 0) == "runs/objectives/digits_100steps_vit/dino_lr0.0005/seed0"
    conv.seeds, vit.seeds = [0], [0]
    lrs = {n: study.study_optimiser(n) for n in ("dino", "swav")}
    used = {"dino": ["bf16"], "swav": ["bf16"]}
    assert f"Study settings: dino {overrides[0]}." in study.header(conv, ["dino", "swav"], lrs, "cmd", used)
    assert not any(line.startswith("Study settings") for line in study.header(vit, ["dino", "swav"], lrs, "cmd", used))
    assert "Precision: trainer.precision=auto → bf16 (each run's precision.json)." in study.header(
        conv, ["dino", "swav"], lrs, "cmd", used)
    fp32 = type("Args", (conv,), dict(precision="fp32"))  # a forced precision has its own run folders
    assert study.folder(fp32, "swav", 1) == "runs/objectives/digits_100steps/swav_lr0.001_fp32/seed1"


def test_plot_only_redraws_a_committed_table(tmp_path):
    committed = ROOT / "experiments/objectives/results_digits_new_methods.json"
    copy = tmp_path / committed.name
    copy.write_text(committed.read_text())
    _study().plot(json.loads(copy.read_text()), copy.with_suffix(""))
    for name in ("results_digits_new_methods.png", "results_digits_new_methods_wallclock.png"):
        assert (tmp_path / name).stat().st_size > 10_000, name
