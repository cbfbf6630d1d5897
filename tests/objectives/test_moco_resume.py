"""MoCo v2's queue and pointer live in the checkpoint: a stopped and resumed run equals the uninterrupted one."""

import torch

from mmssl import checkpoint
from mmssl.config import compose
from mmssl.logging import RunLogger
from mmssl.train.trainer import Trainer
from tests.conftest import tiny_overrides

MOCO = ["objective=moco_v2", "objective.moco_v2.queue_size=40", "objective.moco_v2.hidden_dim=16",
        "objective.moco_v2.projection_dim=8"]


def _train(run_dir, *extra, resume=False):
    cfg = compose("pretrain", tiny_overrides(run_dir, "trainer.steps=6", f"resume={str(resume).lower()}", *MOCO, *extra))
    trainer = Trainer(cfg, run_dir)
    logger = RunLogger(run_dir, None, mode="disabled", resume=resume)
    trainer.fit(logger)
    logger.close()
    return trainer


def test_moco_v2_resume_is_bit_identical(tmp_path):
    straight = _train(tmp_path / "a", "trainer.checkpoint_every=0")
    _train(tmp_path / "b", "trainer.checkpoint_every=3")
    for p in checkpoint.checkpoints(tmp_path / "b" / "checkpoints"):
        if not p.name.endswith("00000003.pt"):
            p.unlink()
    state = checkpoint.load(tmp_path / "b" / "checkpoints" / "step_00000003.pt")
    assert int(state["model"]["objectives.moco_v2.queue_ptr"]) == (3 * 32) % 40  # 3 steps of 32 keys
    resumed = _train(tmp_path / "b", "trainer.checkpoint_every=3", resume=True)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert int(a["objectives.moco_v2.queue_ptr"]) == (6 * 32) % 40
    for name in a:
        assert torch.equal(a[name], b[name]), name
