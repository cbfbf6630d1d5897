"""Numerical, loading and logging faults: each stops with a one-line error or is survived, and saved files stay intact."""

import hashlib
import pickle
import warnings

import pytest
import torch

import tests.reliability.faults  # noqa: F401  (registers the test_nonfinite objective)
from mmssl import checkpoint
from mmssl.cli import main
from mmssl.config import compose
from mmssl.logging import RunLogger, read_metrics
from mmssl.train.trainer import NonFiniteError
from tests.conftest import tiny_overrides
from tests.reliability.harness import fit


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: "), err
    return err


def _digests(directory):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.glob("step_*.pt*"))}


def _fault(at_call, where):
    return f"+objective.fault={{name:test_nonfinite,at_call:{at_call},where:{where}}}"


# -- numerical faults --------------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["loss", "gradient"])
def test_nonfinite_stops_naming_step_and_term(tmp_path, capsys, where):
    err = _error(capsys, ["pretrain", *tiny_overrides(tmp_path), _fault(5, where)])
    assert f"non-finite {where} at step 5" in err
    assert ("'fault'" in err) if where == "loss" else ("gradient" in err)
    assert "intact" in err
    ckpts = checkpoint.checkpoints(tmp_path / "checkpoints")
    assert [p.name for p in ckpts] == ["step_00000003.pt"]  # the last good one, and nothing after it
    assert checkpoint.load(ckpts[0])["step"] == 3  # loads and verifies


@pytest.mark.parametrize("where", ["loss", "gradient"])
def test_nonfinite_skip_counts_and_finishes(tmp_path, where):
    cfg = compose("pretrain", tiny_overrides(tmp_path, _fault(2, where), "trainer.nonfinite=skip"))
    trainer = fit(cfg, tmp_path)
    assert trainer.step == 6 and trainer.skipped_steps == 1
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert checkpoint.load(checkpoint.checkpoints(tmp_path / "checkpoints")[-1])["skipped_steps"] == 1


def test_persistent_nonfinite_with_skip_gives_up(tmp_path, monkeypatch):
    from tests.reliability.faults import NonFiniteAt

    real = NonFiniteAt.forward

    def always_nan(self, batch, encoders):
        if self.calls > 200:  # stand-in for "hangs forever"
            raise RuntimeError("still retrying after 200 non-finite steps")
        self.at_call = self.calls + 1
        return real(self, batch, encoders)

    monkeypatch.setattr(NonFiniteAt, "forward", always_nan)
    cfg = compose("pretrain", tiny_overrides(tmp_path, _fault(1, "loss"), "trainer.nonfinite=skip"))
    with pytest.raises(NonFiniteError, match="consecutive"):
        fit(cfg, tmp_path)


# -- data faults ---------------------------------------------------------------------------------------

def test_two_channel_images_train(tmp_path):
    cfg = compose("pretrain", tiny_overrides(tmp_path, "data.channels=2", "encoder.image.in_channels=2",
                                             "trainer.steps=2"))
    assert fit(cfg, tmp_path).step == 2


# -- safe loading --------------------------------------------------------------------------------------

class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("touch pwned",))


@pytest.mark.parametrize("command", ["eval", "export"])
def test_code_running_pickle_is_refused(tmp_path, capsys, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "step_00000001.pt"
    torch.save({"model": _Evil()}, evil)  # a checkpoint that would run a shell command when unpickled
    argv = [command, str(evil)] + (["--out", str(tmp_path / "out")] if command == "export" else [])
    err = _error(capsys, argv)
    assert "cannot be loaded safely" in err and not (tmp_path / "pwned").exists()
    with open(tmp_path / "plain.pkl", "wb") as f:
        pickle.dump({"model": _Evil()}, f)
    with pytest.raises(checkpoint.CheckpointError):
        checkpoint.load(tmp_path / "plain.pkl")
    assert not (tmp_path / "pwned").exists()


def test_wrong_architecture_lists_keys_and_keeps_checkpoints(tmp_path, capsys):
    assert main(["pretrain", *tiny_overrides(tmp_path)]) == 0
    before = _digests(tmp_path / "checkpoints")
    err = _error(capsys, ["pretrain", *tiny_overrides(tmp_path, "resume=true", "trainer.steps=9",
                                                    "encoder.image.width=8", "resume_override=[trainer.steps,encoder]")])
    assert "does not fit this architecture" in err and "shape-mismatched" in err and "encoders.image." in err
    assert _digests(tmp_path / "checkpoints") == before


def test_truncated_checkpoint_falls_back_and_resumes(tmp_path):
    fit(compose("pretrain", tiny_overrides(tmp_path, "trainer.steps=6")), tmp_path)
    newest = checkpoint.checkpoints(tmp_path / "checkpoints")[-1]
    newest.write_bytes(newest.read_bytes()[:1000])  # a crash of some other writer, or a full disk
    with pytest.warns(UserWarning, match="fails its checksum.*falling back"):
        trainer = fit(compose("pretrain", tiny_overrides(tmp_path, "trainer.steps=9", "resume=true")), tmp_path)
    assert trainer.step == 9


# -- logging faults ------------------------------------------------------------------------------------

def test_wandb_unreachable_falls_back_without_killing_the_run(tmp_path, monkeypatch, capsys):
    import wandb

    modes = []

    def unreachable(*args, mode=None, **kwargs):
        modes.append(mode)
        raise wandb.errors.CommError("network unreachable (simulated)")

    monkeypatch.setattr(wandb, "init", unreachable)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["pretrain", *tiny_overrides(tmp_path / "run", "logger.mode=online")]) == 0
    assert modes == ["online", "offline"]  # tried online, then offline, then gave up on wandb only
    assert sum("wandb online failed" in str(w.message) for w in caught) == 1
    assert [r["step"] for r in read_metrics(tmp_path / "run") if "train/loss" in r] == [2, 4, 6]


def test_online_without_credentials_goes_offline(tmp_path, monkeypatch):
    import wandb

    class FakeRun:
        logged = []

        def log(self, metrics, step=None):
            if step == 4:
                raise OSError("wandb service died (simulated)")
            self.logged.append(step)

        def finish(self, quiet=True):
            pass

    def init(*args, mode=None, **kwargs):
        if mode == "online":
            raise wandb.errors.UsageError("api_key not configured (no-tty)")
        return FakeRun()

    monkeypatch.setattr(wandb, "init", init)
    with pytest.warns(UserWarning, match="wandb online failed"):
        logger = RunLogger(tmp_path, {"a": 1}, mode="online")
    assert logger.mode == "offline"
    with pytest.warns(UserWarning, match="wandb log failed"):
        for step in (2, 4, 6):
            logger.log({"train/loss": 1.0}, step)
    logger.close()
    assert FakeRun.logged == [2]  # wandb dropped after its failure ...
    assert [r["step"] for r in read_metrics(tmp_path)] == [2, 4, 6]  # ... local metrics kept every step
