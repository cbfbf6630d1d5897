"""Split and loader options for real corpora: named held-out groups, stratified limits, image channels and
aspect, native sample rates."""

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from mmssl.build import build_data
from mmssl.config import compose
from mmssl.data.audio import audio_folder
from mmssl.data.base import group_split, stratified_limit
from mmssl.data.images import image_folder
from mmssl.data.manifest import manifest
from mmssl.errors import DataError


def test_stratified_limit_keeps_class_proportions_and_is_seeded():
    labels = torch.arange(5).repeat_interleave(20)  # class-ordered, as a folder of class folders is
    idx = stratified_limit(len(labels), labels, 10, seed=0)
    assert len(idx) == 10 and torch.bincount(labels[idx], minlength=5).tolist() == [2] * 5
    assert torch.equal(idx, stratified_limit(len(labels), labels, 10, seed=0))
    assert not torch.equal(idx, stratified_limit(len(labels), labels, 10, seed=1))
    assert not torch.equal(idx, torch.arange(10))  # not "the first N" (which is class 0 only)
    assert len(stratified_limit(len(labels), labels, 7, seed=0)) == 7  # remainders handed out
    assert torch.equal(stratified_limit(len(labels), labels, 500, seed=0), torch.arange(100))


def test_group_split_holds_out_named_groups_and_lists_them_when_unknown():
    groups = ["alice", "bob", "carol", "bob", "alice"]
    train, test = group_split(groups, ["bob"], "set")
    assert test.tolist() == [1, 3] and train.tolist() == [0, 2, 4]
    with pytest.raises(DataError, match=r"test_groups \['dave'\] not found; the groups are: alice, bob, carol"):
        group_split(groups, ["dave"], "set")
    with pytest.raises(DataError, match="every group"):
        group_split(groups, ["alice", "bob", "carol"], "set")


def _write_clips(root, rate=8000, speakers=("s1", "s2", "s3"), labels=("0", "1", "2"), takes=2):
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for label in labels:
        for spk in speakers:
            for t in range(takes):
                sf.write(root / f"{label}_{spk}_{t}.wav", (0.1 * rng.standard_normal(rate // 2)).astype("float32"), rate)
    return root


def test_audio_folder_native_rate_test_groups_and_pattern(tmp_path):
    root = _write_clips(tmp_path / "clips")
    splits = audio_folder(str(root), test_groups=["s2"], clip_seconds=0.5)
    assert splits.meta["sample_rate"] == 8000 and splits.train.data["audio"].shape[1] == 4000  # native rate
    assert set(splits.test.groups) == {"s2"} and "s2" not in splits.train.groups and len(splits.test) == 6
    # the config default resolves to the files' rate too, and the encoder follows it
    cfg = compose("pretrain", ["data=audio_folder", f"data.root={root}", "encoder=trimodal"])
    assert cfg.data.sample_rate == 8000 and cfg.encoder.audio.sample_rate == 8000
    # a pattern reading the take as the group
    splits = audio_folder(str(root), test_groups=["1"], group_pattern=r"_(?P<group>\d)\.wav$", clip_seconds=0.5)
    assert set(splits.test.groups) == {"1"} and len(splits.test) == 9
    with pytest.raises(DataError, match="the groups are: s1, s2, s3"):
        build_data(compose("pretrain", ["data=audio_folder", f"data.root={root}", "data.test_groups=[s9]"]))
    with pytest.raises(DataError, match="does not match"):
        audio_folder(str(root), group_pattern=r"^x")
    sf.write(root / "0_s4_0.wav", np.zeros(1600, dtype="float32"), 16000)
    assert audio_folder(str(root)).meta["sample_rate"] == 16000  # mixed rates: resampled to the old default
    assert compose("pretrain", ["data=audio_folder", f"data.root={root}"]).data.sample_rate == 16000  # fallback
    assert audio_folder(str(root), sample_rate=8000, limit=10).train.data["audio"].shape[1] == 8000


def _write_images(root, size=(32, 12), per_class=6):
    rng = np.random.default_rng(0)
    for c in ("a", "b", "c"):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
            arr[:, : size[0] // 8] = 255  # a white left band that a centre crop cuts off
            Image.fromarray(arr).save(root / c / f"w{i % 3}_{i}.png")
    return root


def test_image_folder_channels_aspect_groups_and_limit(tmp_path):
    root = _write_images(tmp_path / "imgs")
    grey = image_folder(str(root), size=8, channels=1)
    assert grey.train.data["image"].shape[1:] == (1, 8, 8)
    rgb = image_folder(str(root), size=8, channels=3)
    assert rgb.train.data["image"].shape[1:] == (3, 8, 8)
    squash = image_folder(str(root), size=8, channels=1, aspect="squash").train.data["image"].float()
    crop = image_folder(str(root), size=8, channels=1, aspect="crop").train.data["image"].float()
    assert squash[:, :, :, 0].mean() > crop[:, :, :, 0].mean() + 30  # the crop dropped the white band
    # channels: null follows the encoder (the default convnet reads grey)
    cfg = compose("pretrain", ["data=image_folder", f"data.root={root}", "data.size=8"])
    assert build_data(cfg).train.data["image"].shape[1] == 1
    held = image_folder(str(root), size=8, channels=1, group_pattern=r"/(w\d)_", test_groups=["w2"])
    assert set(held.test.groups) == {"w2"} and len(held.test) == 6
    limited = image_folder(str(root), size=8, channels=1, limit=9, test_fraction=0.34)
    y = torch.cat([limited.train.labels, limited.test.labels])
    assert torch.bincount(y).tolist() == [3, 3, 3]
    with pytest.raises(DataError, match="channels must be 1"):
        image_folder(str(root), channels=2)
    with pytest.raises(DataError, match="aspect must be one of crop, squash"):
        image_folder(str(root), aspect="stretch")


def test_manifest_group_column_and_limit(tmp_path):
    rows = ["text,label,writer"] + [f"item {i},{i % 2},{'w' + str(i % 3)}" for i in range(18)]
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    splits = manifest(str(tmp_path / "m.csv"), group_column="writer", test_groups=["w0"], context_length=8)
    assert set(splits.test.groups) == {"w0"} and len(splits.test) == 6
    with pytest.raises(DataError, match="the groups are: w0, w1, w2"):
        manifest(str(tmp_path / "m.csv"), group_column="writer", test_groups=["w7"])
    with pytest.raises(DataError, match="has no groups"):
        manifest(str(tmp_path / "m.csv"), test_groups=["w0"])
    small = manifest(str(tmp_path / "m.csv"), limit=10, test_fraction=0.2)
    assert torch.bincount(torch.cat([small.train.labels, small.test.labels])).tolist() == [5, 5]
