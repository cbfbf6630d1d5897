"""Bit-exact resume: 2N steps straight == N steps, stop, resume, N steps."""

import pytest
import torch

from mmssl import checkpoint
from mmssl.config import compose
from mmssl.logging import RunLogger
from mmssl.train.trainer import Trainer
from tests.conftest import tiny_overrides


def _train(run_dir, steps, *extra, resume=False):
    cfg = compose("pretrain", tiny_overrides(run_dir, f"trainer.steps={steps}", f"resume={str(resume).lower()}", *extra))
    trainer = Trainer(cfg, run_dir)
    logger = RunLogger(run_dir, None, mode="disabled", resume=resume)
    trainer.fit(logger)
    logger.close()
    return trainer


@pytest.mark.parametrize("objective,precision", [("simclr", "fp32"), ("byol", "fp32"), ("simclr", "bf16"),
                                                 ("byol", "bf16")])
def test_resume_is_bit_identical(tmp_path, objective, precision):
    run = (f"objective={objective}", f"trainer.precision={precision}")
    straight = _train(tmp_path / "a", 6, *run, "trainer.checkpoint_every=0")
    # "stopped" after 3 steps: same schedule (steps=6) but only the step-3 checkpoint survives
    _train(tmp_path / "b", 6, *run, "trainer.checkpoint_every=3")
    ckpts = checkpoint.checkpoints(tmp_path / "b" / "checkpoints")
    for p in ckpts:
        if not p.name.endswith("00000003.pt"):
            p.unlink()
    resumed = _train(tmp_path / "b", 6, *run, "trainer.checkpoint_every=3", resume=True)
    assert resumed.step == straight.step == 6
    assert resumed.precision.name == precision and resumed.precision.source == "recorded"
    assert resumed.channels_last == (precision == "bf16")
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_checkpoint_is_atomic_and_verified(tmp_path):
    path = checkpoint.save({"x": torch.arange(4), "config": {"a": [1, None, "s"]}}, tmp_path / "step_00000001.pt")
    assert checkpoint.load(path)["config"] == {"a": [1, None, "s"]}
    assert not list(tmp_path.glob(".*tmp*"))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated by a crash of some other writer
    with pytest.raises(checkpoint.CheckpointError, match="checksum"):
        checkpoint.load(path)
    older = checkpoint.save({"x": torch.zeros(1)}, tmp_path / "step_00000000.pt")
    with pytest.warns(UserWarning, match="falling back"):
        found, state = checkpoint.latest(tmp_path)
    assert found == older and torch.equal(state["x"], torch.zeros(1))


def test_rng_roundtrip():
    import random

    import numpy as np

    state = checkpoint.capture_rng()
    a = (torch.rand(3), np.random.rand(3), random.random())
    checkpoint.restore_rng(state)
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_pickle_that_runs_code_is_refused(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"model": Evil()}))
    with pytest.raises(checkpoint.CheckpointError, match="cannot be loaded safely"):
        checkpoint.load(path)
