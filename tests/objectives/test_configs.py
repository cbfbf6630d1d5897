"""Every objective config composes, names a registered objective with options it accepts, builds and runs."""

from pathlib import Path

import pytest
import torch

from mmssl.config import compose, config_dir, registry_kwargs
from mmssl.registry import OBJECTIVES
from mmssl.train.build import OBJECTIVE_RUN_KEYS
from mmssl.types import Batch
from tests.objectives.conftest import make_data, make_encoders

#: the objective library's configs (cross-modal ones — bind, clip, siglip — are tested with their objectives)
LIBRARY = ("simclr", "byol", "moco_v2", "moco_v3", "triplet", "dcl", "simsiam", "barlow_twins", "vicreg",
           "masked_image", "masked_text", "masked_audio", "rotation", "colorization", "cpc",
           "temporal_contrastive", "temporal_order", "next_segment", "autoencoder", "vae")


def test_every_library_objective_has_a_config():
    present = {p.stem for p in Path(config_dir(), "objective").glob("*.yaml")}
    assert set(LIBRARY) <= present, sorted(set(LIBRARY) - present)
    assert set(LIBRARY) <= set(OBJECTIVES.names())


@pytest.mark.parametrize("name", LIBRARY)
def test_config_builds_and_runs(name):
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
    out = objective(Batch({modality: data}, labels), encoders)
    assert torch.isfinite(out.loss) and all(isinstance(v, float) for v in out.metrics.values())
