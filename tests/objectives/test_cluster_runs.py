"""DINO, SwAV, DeepCluster-v2 and NNCLR through configs, recipes, the trainer (exact resume) and the CLI."""

import json

import pytest
import torch

from mmssl import checkpoint
from mmssl.build import OBJECTIVE_RUN_KEYS
from mmssl.cli import main
from mmssl.config import compose, registry_kwargs
from mmssl.errors import ConfigError
from mmssl.logging import RunLogger
from mmssl.registry import OBJECTIVES
from mmssl.train.trainer import Trainer
from mmssl.types import Batch
from tests.conftest import tiny_overrides
from tests.objectives.conftest import make_data, make_encoders

NAMES = ("dino", "swav", "deepcluster_v2", "nnclr")


def _config_objective(name):
    node = compose("pretrain", [f"objective={name}"]).objective[name]
    assert node.name == name and node.modality in OBJECTIVES.get(name).modalities
    encoders = make_encoders(node.modality)
    kwargs = registry_kwargs(node, OBJECTIVE_RUN_KEYS)
    if name == "deepcluster_v2":  # 8 bank rows cannot make the config's 100 clusters
        kwargs["n_prototypes"] = [4, 4, 4]
    objective = OBJECTIVES.build(name, encoders, **kwargs)
    return encoders, objective


@pytest.mark.parametrize("name", NAMES)
def test_config_builds_and_runs_under_bfloat16_autocast(name):
    encoders, objective = _config_objective(name)
    x = make_data("image", 8)
    for epoch in range(2):  # two epochs, so DeepCluster-v2 has clustered once
        batch = Batch({"image": x}, extra={"index": torch.arange(8), "epoch": torch.full((8,), epoch)})
        encoders.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = objective(batch, encoders)
        out.loss.backward()  # before after_step, as in the trainer (SwAV renormalises its prototypes there)
        objective.after_step(encoders, 0.5)
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss) and out.loss.item() > 0
    grads = [p.grad for p in encoders.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert all(isinstance(v, float) for v in out.metrics.values())


@pytest.mark.parametrize("name", NAMES)
def test_digits_recipe_composes_to_valid_options(name):
    try:  # `recipe=` once the pretrain defaults list has a recipe group, `+recipe=` until then
        cfg = compose("pretrain", [f"recipe={name}_digits"])
    except ConfigError:
        cfg = compose("pretrain", [f"+recipe={name}_digits"])
    assert list(cfg.objective) == [name] and cfg.data.name == "digits"
    OBJECTIVES.check_kwargs(name, registry_kwargs(cfg.objective[name], OBJECTIVE_RUN_KEYS), positional=1)
    assert cfg.trainer.optimizer in ("adamw", "sgd") and float(cfg.trainer.lr) > 0


#: small heads and (for DeepCluster-v2) batches of 512, so 6 steps span 3 epochs and 2 re-clusterings
RESUME = {
    "dino": ["objective.dino.out_dim=32", "objective.dino.hidden_dim=16", "objective.dino.bottleneck_dim=8",
             "objective.dino.warmup_teacher_temp_steps=4", "objective.dino.freeze_last_layer_steps=2",
             "objective.dino.multi_crop.local_crops=2"],
    "swav": ["objective.swav.n_prototypes=10", "objective.swav.hidden_dim=16", "objective.swav.queue_length=64",
             "objective.swav.queue_start_step=1", "objective.swav.freeze_prototypes_steps=2",
             "objective.swav.multi_crop.local_crops=2"],
    "deepcluster_v2": ["objective.deepcluster_v2.n_prototypes=[10,10]", "objective.deepcluster_v2.hidden_dim=16",
                       "objective.deepcluster_v2.multi_crop.local_crops=2", "data.batch_size=512"],
    "nnclr": ["objective.nnclr.queue_size=40", "objective.nnclr.hidden_dim=16",
              "objective.nnclr.predictor_hidden_dim=16"],
}


def _train(run_dir, name, *extra, resume=False):
    cfg = compose("pretrain", tiny_overrides(run_dir, "trainer.steps=6", f"resume={str(resume).lower()}",
                                             f"objective={name}", *RESUME[name], *extra))
    trainer = Trainer(cfg, run_dir)
    logger = RunLogger(run_dir, None, mode="disabled", resume=resume)
    trainer.fit(logger)
    logger.close()
    return trainer


@pytest.mark.parametrize("name", NAMES)
def test_resume_is_bit_identical(tmp_path, name):
    straight = _train(tmp_path / "a", name, "trainer.checkpoint_every=0")
    _train(tmp_path / "b", name, "trainer.checkpoint_every=3")
    for p in checkpoint.checkpoints(tmp_path / "b" / "checkpoints"):
        if not p.name.endswith("00000003.pt"):
            p.unlink()
    resumed = _train(tmp_path / "b", name, "trainer.checkpoint_every=3", resume=True)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    prefix = f"objectives.{name}."
    state = {"dino": ["center", "step"], "swav": ["queue", "queue_filled", "step"],
             "deepcluster_v2": ["bank", "bank_index", "assignments", "prototypes0", "epoch"],
             "nnclr": ["queue", "queue_ptr", "queue_filled"]}[name]
    assert all(prefix + k in a for k in state)
    assert a[prefix + state[0]].abs().sum() > 0  # the state was actually used, not left at its initial zeros
    if name == "deepcluster_v2":
        assert int(a[prefix + "epoch"]) == 2  # 1258 training digits // 512 = 2 steps per epoch
    if name == "swav":
        assert int(a[prefix + "queue_filled"]) == 64
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("name", NAMES)
def test_cli_pretrain_three_steps(tmp_path, name):
    run = tmp_path / "run"
    extra = ["data.batch_size=512", "objective.deepcluster_v2.n_prototypes=[10,10]"] if name == "deepcluster_v2" else []
    assert main(["pretrain", *tiny_overrides(run, f"objective={name}", "trainer.steps=3", "trainer.log_every=1",
                                             *extra)]) == 0
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r[f"train/{name}/loss"] for r in records if f"train/{name}/loss" in r]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(v)) for v in losses)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["train/steps"] == 3 and 0 < summary["eval/image/ssl/linear_probe_accuracy"] <= 1
    if name == "deepcluster_v2":  # epoch 0 (2 steps) fills the bank, step 3 trains on its clusters
        assert losses[:2] == [0.0, 0.0] and losses[2] > 0


def test_list_objectives_shows_the_methods_with_modalities(capsys):
    assert main(["list", "objectives"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines() if line.split() and line.split()[0] in NAMES}
    assert rows == {"dino": "image,audio,obs", "swav": "image,audio,text,obs",
                    "deepcluster_v2": "image,audio,text,obs", "nnclr": "image,audio,text,obs"}
