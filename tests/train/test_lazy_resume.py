"""Bit-exact resume on a lazy image folder decoded by two DataLoader workers (data.cache=none, num_workers=2)."""

import torch

from mmssl.train import checkpoint
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
