"""Labelled-subset selection, encoder units, freezing groups, layer-wise LR decay, FixMatch pseudo-labels."""

import math

import pytest
import torch
from torch import nn

from mmssl.data.adapt import adapt_images
from mmssl.errors import ConfigError, DataError
from mmssl.finetune.parts import (
    balanced_subset,
    carve_validation,
    fixmatch_loss,
    layer_units,
    param_groups,
    pseudo_labels,
    trainable_units,
)
from mmssl.registry import ENCODERS

LABELS = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)


def test_fraction_subset_is_class_balanced_and_fixed_by_seed():
    per_class = balanced_subset(LABELS, 0.1, seed=3)
    assert [len(i) for i in per_class] == [5, 3, 2]  # round(0.1 · n_c) of every class
    assert all((LABELS[i] == c).all() for c, i in enumerate(per_class))
    again = balanced_subset(LABELS, 0.1, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(per_class, again))
    other = balanced_subset(LABELS, 0.1, seed=4)
    assert not all(torch.equal(a, b) for a, b in zip(per_class, other))


def test_count_subset_takes_that_many_per_class_and_all_means_all():
    assert [len(i) for i in balanced_subset(LABELS, 4, seed=0)] == [4, 4, 4]
    full = balanced_subset(LABELS, 1.0, seed=0)
    assert torch.equal(torch.cat(full).sort().values, torch.arange(len(LABELS)))


def test_fraction_that_empties_a_class_fails_in_one_line():
    with pytest.raises(DataError, match=r"labels=0\.02 leaves class 'two' empty") as info:
        balanced_subset(LABELS, 0.02, seed=0, class_names=["zero", "one", "two"])  # 0.02·20 = 0.4 → 0
    assert "\n" not in str(info.value)
    with pytest.raises(DataError, match="has only 20"):
        balanced_subset(LABELS, 25, seed=0)
    with pytest.raises(ConfigError, match="fraction in"):
        balanced_subset(LABELS, 1.5, seed=0)


def test_validation_is_carved_per_class_and_disjoint():
    per_class = balanced_subset(LABELS, 10, seed=0)
    train, val = carve_validation(per_class, 0.2)
    assert len(val) == 6 and len(train) == 24
    assert torch.bincount(LABELS[val]).tolist() == [2, 2, 2]
    assert not set(train.tolist()) & set(val.tolist())
    train, val = carve_validation(balanced_subset(LABELS, 1, seed=0), 0.5)  # one per class: none to spare
    assert len(val) == 0 and len(train) == 3


def _covered_once(encoder, units):
    ids = [id(p) for u in units for p in u.params]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in encoder.parameters()}


def test_units_follow_the_architecture():
    conv = ENCODERS.build("convnet", width=4)
    units = layer_units(conv)
    assert [u.name for u in units] == ["features.0", "features.1", "features.2"]
    _covered_once(conv, units)
    resnet = ENCODERS.build("resnet18", in_channels=1)
    names = [u.name for u in layer_units(resnet)]
    assert names == ["net.conv1", "net.bn1", "net.layer1", "net.layer2", "net.layer3", "net.layer4"]
    _covered_once(resnet, layer_units(resnet))
    vit = ENCODERS.build("open_clip_vision", in_channels=1, embed_dim=16,
                         config=dict(image_size=8, patch_size=4, width=16, layers=3, head_width=8))
    names = [u.name for u in layer_units(vit)]
    assert names[0] == "visual.<embeddings>" and names[-1] == "visual.proj"
    assert [n for n in names if "resblocks" in n] == [f"visual.transformer.resblocks.{i}" for i in range(3)]
    _covered_once(vit, layer_units(vit))


def test_partial_mode_trains_the_last_units_and_rejects_too_many():
    units = layer_units(ENCODERS.build("convnet", width=4))
    assert trainable_units(units, "partial", 2) == [False, True, True]
    assert trainable_units(units, "frozen", 2) == [False] * 3
    with pytest.raises(ConfigError, match=r"unfreeze_last must be in \[1, 3\]"):
        trainable_units(units, "partial", 4)


def test_layer_decay_groups_have_the_right_lrs():
    conv = ENCODERS.build("convnet", width=4)
    units, head = layer_units(conv), nn.Linear(conv.dim, 10)
    groups = param_groups(units, [True, True, True], head, lr=1.0, weight_decay=0.1, layer_decay=0.5)
    lrs = {g["name"]: g["lr"] for g in groups}
    assert lrs == {"head": 1.0, "head/no_decay": 1.0, "features.2": 0.5, "features.2/no_decay": 0.5,
                   "features.1": 0.25, "features.1/no_decay": 0.25, "features.0": 0.125, "features.0/no_decay": 0.125}
    assert all(g["weight_decay"] == (0.0 if g["name"].endswith("no_decay") else 0.1) for g in groups)
    partial = param_groups(units, [False, False, True], head, lr=1.0, weight_decay=0.0, layer_decay=0.5)
    assert {g["name"] for g in partial} == {"head", "head/no_decay", "features.2", "features.2/no_decay"}
    optimizer = torch.optim.AdamW(groups)  # the groups are valid optimiser input and keep their LRs
    assert [g["lr"] for g in optimizer.param_groups] == [g["lr"] for g in groups]


def test_pseudo_labels_keep_only_confident_samples():
    logits = torch.tensor([[4.0, 0.0, 0.0],    # p_max = e⁴/(e⁴+2) ≈ 0.965 → kept, label 0
                           [0.0, 1.0, 0.0],    # ≈ 0.576 → dropped
                           [0.0, 0.0, 9.0]])   # ≈ 1.000 → kept, label 2
    labels, mask = pseudo_labels(logits, threshold=0.95)
    assert labels.tolist() == [0, 1, 2] and mask.tolist() == [True, False, True]
    assert pseudo_labels(logits, threshold=0.97)[1].tolist() == [False, False, True]
    strong = torch.zeros(3, 3)  # uniform predictions: CE = log 3 for each kept item, averaged over all 3
    assert math.isclose(fixmatch_loss(strong, labels, mask).item(), 2 * math.log(3) / 3, rel_tol=1e-6)


def test_adapt_images_resizes_and_converts_channels():
    rgb = torch.zeros(2, 3, 28, 28, dtype=torch.uint8)
    rgb[:, 0] = 255  # pure red → luma 0.299 · 255 ≈ 76
    grey = adapt_images(rgb, 1, (8, 8))
    assert grey.shape == (2, 1, 8, 8) and grey.dtype == torch.uint8 and int(grey[0, 0, 4, 4]) == 76
    assert adapt_images(grey, 3, (16, 16)).shape == (2, 3, 16, 16)
    with pytest.raises(DataError, match="cannot adapt 4-channel"):
        adapt_images(torch.zeros(1, 4, 8, 8), 1, (8, 8))


def test_augment_specs_per_modality():
    from mmssl.finetune.trainer import build_augment as _build_augment

    spec = {"image": {"name": "simclr", "crop_scale": [0.8, 1.0]}, "audio": {"name": "audio_default", "noise_p": 0.0}}
    assert type(_build_augment(spec, "audio", None, "weak_augment")).__name__ == "AudioDefault"
    assert _build_augment(spec, "image", None, "weak_augment").crop_scale == (0.8, 1.0)
    with pytest.raises(ConfigError, match="weak_augment has no entry for modality 'text'"):
        _build_augment(spec, "text", None, "weak_augment")
    with pytest.raises(ConfigError, match="is for \\['image'\\], not 'audio'"):
        _build_augment({"name": "simclr"}, "audio", None, "weak_augment")
    # no spec: the modality's default view augmentation with the data's (image) options
    assert _build_augment(None, "image", {"crop_scale": [0.5, 1.0]}, "strong_augment").crop_scale == (0.5, 1.0)


def test_fit_probe_head_predicts_what_the_sklearn_probe_predicts():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from torch import nn

    from mmssl.data.base import ArrayDataset
    from mmssl.finetune.parts import Classifier, fit_probe_head
    from mmssl.types import EncoderOutput

    class Identity(nn.Module):
        dim = 6

        def forward(self, x):
            return EncoderOutput(pooled=x, tokens=None)

    g = torch.Generator().manual_seed(0)
    for classes in (2, 4):
        x = torch.randn(120, 6, generator=g) * torch.tensor([1.0, 5.0, 0.1, 2.0, 1.0, 3.0]) + 2.0
        y = torch.randint(0, classes, (120,), generator=g)
        x[:, 0] += y.float()  # some signal
        model = Classifier(nn.ModuleDict({"vector": Identity()}), "vector", classes)
        fit_probe_head(model, ArrayDataset({"vector": x}, y), classes, C=0.5, batch_size=64, device="cpu")
        probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, max_iter=2000)).fit(x.numpy(), y.numpy())
        with torch.no_grad():
            ours = model(x).argmax(1).numpy()
        assert (ours == probe.predict(x.numpy())).all()


def test_grouped_subset_draws_from_every_group():
    from mmssl.finetune.parts import grouped_subset

    labels = torch.tensor([0, 1] * 12)
    groups = [f"g{i % 3}" for i in range(24)]
    per_class = grouped_subset(labels, groups, 1, seed=0)
    assert [len(i) for i in per_class] == [3, 3]  # one per class from each of the three groups
    assert {groups[i] for idx in per_class for i in idx.tolist()} == {"g0", "g1", "g2"}
    with pytest.raises(DataError, match="per group leaves class"):
        grouped_subset(torch.tensor([0, 0, 0]), ["a", "b", "c"], 1, seed=0, class_names=["x", "y"])
