"""A fine-tune on the trainer resumes bit-exactly: N steps straight == interrupted after a checkpoint, resumed to N."""

import json

import pytest
import torch

from mmssl import checkpoint
from mmssl.cli import main
from mmssl.finetune.trainer import FinetuneTrainer
from mmssl.logging import read_metrics

FAST = ["steps=8", "eval_every=2", "checkpoint_every=2", "batch_size=16", "threads=1", "logger.mode=disabled",
        "progress=false"]
VOLATILE = ("time", "train/steps_per_second")  # wall-clock readings


def _records(folder):
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in read_metrics(folder)]


@pytest.mark.parametrize("tag, mode", [
    ("full", ["labels=10", "patience=0"]),  # weak views on labelled batches, validation keeping the best state
    ("semi", ["labels=2", "mode=semi", "pseudo_threshold=0.5", "unlabelled_batch_size=32"]),  # + objective, strong views
    ("full-bf16", ["labels=10", "patience=0", "precision=bf16"]),  # the loop's forward in bf16 autocast
])
def test_interrupted_finetune_resumes_bit_exactly(run_dir, monkeypatch, tag, mode):
    assert main(["finetune", str(run_dir), *mode, f"name=straight-{tag}", *FAST]) == 0
    after_step = FinetuneTrainer.after_step

    def interrupt(self):  # a kill between steps 5 and 6: the step-4 checkpoint is the newest
        after_step(self)
        if self.step == 5:
            raise KeyboardInterrupt

    monkeypatch.setattr(FinetuneTrainer, "after_step", interrupt)
    assert main(["finetune", str(run_dir), *mode, f"name=resumed-{tag}", *FAST]) == 130
    monkeypatch.setattr(FinetuneTrainer, "after_step", after_step)
    straight, resumed = run_dir / "finetune" / f"straight-{tag}", run_dir / "finetune" / f"resumed-{tag}"
    assert [p.name for p in checkpoint.checkpoints(resumed / "checkpoints")] == ["step_00000004.pt"]
    assert not (resumed / "summary.json").exists()
    assert main(["finetune", str(run_dir), *mode, f"name=resumed-{tag}", *FAST, "resume=true"]) == 0

    for name in ("classifier.pt", "checkpoints/step_00000008.pt"):  # the result, and the whole learner + optimiser
        a, b = checkpoint.load(straight / name)["model"], checkpoint.load(resumed / name)["model"]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    expected = "bf16" if "precision=bf16" in mode else "fp32"
    assert json.loads((resumed / "precision.json").read_text())["name"] == expected
    assert _records(straight) == _records(resumed)  # steps 2, 4 logged once, 6, 8 after the resume, then test
    assert [r["step"] for r in _records(resumed)] == [2, 4, 6, 8, 8]
    summaries = [json.loads((f / "summary.json").read_text()) for f in (straight, resumed)]
    assert {k: v for k, v in summaries[0].items() if k not in ("time/seconds", "folder")} == \
        {k: v for k, v in summaries[1].items() if k not in ("time/seconds", "folder")}


def test_resume_refuses_a_changed_training_key_and_a_missing_folder(run_dir, capsys):
    assert main(["finetune", str(run_dir), "labels=10", "name=changed", *FAST]) == 0
    assert main(["finetune", str(run_dir), "labels=10", "name=changed", *FAST, "lr=0.5", "resume=true"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "finetune.lr (stored 0.001, now 0.5)" in err and "resume_override=[finetune.lr]" in err, err
    assert main(["finetune", str(run_dir), "labels=10", "name=never-ran", *FAST, "resume=true"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_finished_finetune_resumed_trains_no_further(run_dir):
    assert main(["finetune", str(run_dir), "labels=10", "name=done", *FAST]) == 0
    before = checkpoint.load(run_dir / "finetune" / "done" / "classifier.pt")["model"]
    assert main(["finetune", str(run_dir), "labels=10", "name=done", *FAST, "resume=true"]) == 0
    after = checkpoint.load(run_dir / "finetune" / "done" / "classifier.pt")["model"]
    assert all(torch.equal(before[k], after[k]) for k in before)
    records = _records(run_dir / "finetune" / "done")
    assert [r["step"] for r in records] == [2, 4, 6, 8, 8, 8]  # no training step again: only the test re-evaluated
    assert records[-1] == records[-2] and "test/accuracy" in records[-1]
