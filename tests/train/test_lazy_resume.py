"""Bit-exact resume on a lazy image folder decoded by two DataLoader workers (data.cache=none, num_workers=2)."""

import torch

from mmssl import checkpoint
from tests.data.test_lazy import image_tree
from tests.train.test_resume import _train


def test_lazy_folder_with_workers_resumes_bit_identically(tmp_path):
    root = image_tree(tmp_path / "img", per_class=12, size=(12, 12))
    data = ["data=image_folder", f"data.root={root}", "data.size=8", "data.cache=none", "data.num_workers=2",
            "data.batch_size=8", "encoder.image.in_channels=3"]
    straight = _train(tmp_path / "a", 6, *data, "trainer.checkpoint_every=0")
    assert straight.loader is not None and straight.data.train.is_lazy
    _train(tmp_path / "b", 6, *data, "trainer.checkpoint_every=3")
    for p in checkpoint.checkpoints(tmp_path / "b" / "checkpoints"):
        if not p.name.endswith("00000003.pt"):
            p.unlink()
    resumed = _train(tmp_path / "b", 6, *data, "trainer.checkpoint_every=3", resume=True)
    assert resumed.step == straight.step == 6
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    # and the same run with the files decoded in the main process trains the same weights
    inline = _train(tmp_path / "c", 6, *data[:-3], "data.num_workers=0", *data[-2:], "trainer.checkpoint_every=0")
    for (name, a), b in zip(straight.model.state_dict().items(), inline.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_tar_shards_with_workers_resume_bit_identically_through_the_checkpoint(tmp_path):
    from tests.data.test_shards import write_shards

    root = write_shards(tmp_path / "shards", shards=3, per_shard=9)
    data = ["data=webdataset", f"data.urls={root}", "data.size=8", "data.num_workers=2", "data.batch_size=4",
            "data.probe_items=12", "data.shuffle_buffer=4", "encoder.image.in_channels=3"]
    straight = _train(tmp_path / "a", 8, *data, "trainer.checkpoint_every=0")
    _train(tmp_path / "b", 8, *data, "trainer.checkpoint_every=5")
    for p in checkpoint.checkpoints(tmp_path / "b" / "checkpoints"):
        if not p.name.endswith("00000005.pt"):
            p.unlink()
    state = checkpoint.load(tmp_path / "b" / "checkpoints" / "step_00000005.pt")
    assert sum(state["loader_per_rank"][0]["stream"]["consumed"]) == 5  # one epoch = 6 batches of 4 from 27 samples
    resumed = _train(tmp_path / "b", 8, *data, "trainer.checkpoint_every=5", resume=True)
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_skipped_files_are_counted_in_the_run_summary(tmp_path):
    import json

    from mmssl.cli import main
    from tests.conftest import tiny_overrides

    root = image_tree(tmp_path / "img", per_class=6, size=(12, 12))
    (root / "dog" / "zz-broken.png").write_bytes(b"\x89PNG not really")
    argv = ["pretrain", *tiny_overrides(tmp_path / "run", "data=image_folder", f"data.root={root}", "data.size=8",
                                        "data.cache=none", "data.on_error=skip", "data.batch_size=8",
                                        "encoder.image.in_channels=3")]
    assert main(argv) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["data/decode_errors"] >= 1
