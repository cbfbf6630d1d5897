"""Every objective config composes, names a registered objective with options it accepts, builds and runs."""

from pathlib import Path

import pytest
import torch

from mmssl.build import OBJECTIVE_RUN_KEYS
from mmssl.config import compose, config_dir, registry_kwargs
from mmssl.registry import OBJECTIVES
from mmssl.types import Batch
from tests.objectives.conftest import make_data, make_encoders

#: the objective library's configs (cross-modal ones — bind, clip, siglip — are tested with their objectives)
LIBRARY = ("simclr", "byol", "moco_v2", "moco_v3", "triplet", "dcl", "simsiam", "barlow_twins", "vicreg",
           "masked_image", "masked_text", "masked_audio", "rotation", "colorization", "cpc",
           "temporal_contrastive", "temporal_order", "next_segment", "autoencoder", "vae", "context_encoder", "bigan",
           "dino", "swav", "nnclr")  # (mae, ijepa, data2vec need a ViT; deepcluster_v2 epochs: tests/test_recipes.py)


def test_every_library_objective_has_a_config():
    present = {p.stem for p in Path(config_dir(), "objective").glob("*.yaml")}
    assert set(LIBRARY) <= present, sorted(set(LIBRARY) - present)
    assert set(LIBRARY) <= set(OBJECTIVES.names())


def _build_from_config(name):
    cfg = compose("pretrain", [f"objective={name}"])
    assert list(cfg.objective) == [name]  # the slot name is the file name
    node = cfg.objective[name]
    assert node.name == name and float(node.weight) == 1.0
    modality = node.modality
    assert modality in OBJECTIVES.get(name).modalities
    channels = 3 if name == "colorization" else 1
    encoders = make_encoders(modality, channels=channels)
    kwargs = registry_kwargs(node, OBJECTIVE_RUN_KEYS)
    if name == "masked_text":  # the tiny test vocabulary instead of open_clip's
        kwargs.update(vocab_size=64, special_ids=[62, 63])
    objective = OBJECTIVES.build(name, encoders, **kwargs)
    steps = 8 if OBJECTIVES.get(name).sequence and modality == "obs" else None
    data = make_data(modality, 4, steps=steps, channels=channels)
    labels = torch.tensor([0, 1, 0, 1]) if name == "triplet" else None
    return encoders, objective, Batch({modality: data}, labels)


@pytest.mark.parametrize("name", LIBRARY)
def test_config_builds_and_runs(name):
    encoders, objective, batch = _build_from_config(name)
    out = objective(batch, encoders)
    assert torch.isfinite(out.loss) and all(isinstance(v, float) for v in out.metrics.values())


@pytest.mark.parametrize("name", LIBRARY)
def test_runs_under_bfloat16_autocast(name):
    """The trainer's AMP path (bf16 autocast on CUDA) must not break dtypes; CPU autocast runs the same casts."""
    encoders, objective, batch = _build_from_config(name)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = objective(batch, encoders)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    grads = [p.grad for p in encoders.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", LIBRARY)
def test_loss_is_float32_under_autocast(name):
    encoders, objective, batch = _build_from_config(name)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert objective(batch, encoders).loss.dtype == torch.float32
