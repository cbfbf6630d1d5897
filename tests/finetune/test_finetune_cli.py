"""`mmssl finetune` end to end on a seconds-long pretraining run: outputs, frozen weights, semi, transfer, errors."""

import json

import pytest
import torch
import yaml

from mmssl import checkpoint
from mmssl.cli import main

FAST = ["steps=4", "eval_every=2", "batch_size=16", "threads=1", "logger.mode=disabled"]


def _encoder_state(state: dict, prefix: str) -> dict:
    return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}


def test_finetune_writes_results_into_the_run_folder(run_dir, capsys):
    assert main(["finetune", str(run_dir), "labels=10", "name=full10", *FAST]) == 0
    out = run_dir / "finetune" / "full10"
    summary = json.loads((out / "summary.json").read_text())
    assert 0.0 <= summary["test/accuracy"] <= 1.0
    assert summary["labelled/per_class_min"] == summary["labelled/per_class_max"] == 10
    assert summary["labelled/train_items"] == 80 and summary["labelled/val_items"] == 20  # 8 + 2 per class
    assert f"test accuracy {summary['test/accuracy']:.4f}" in capsys.readouterr().out
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["finetune"]["labels"] == 10 and config["encoder"]["image"]["width"] == 4  # merged with the run's
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "val/accuracy" in r] == [2, 4]
    # full fine-tuning starts from the pretrained weights and moves them
    pretrained = _encoder_state(checkpoint.latest(run_dir / "checkpoints")[1]["model"], "encoders.image.")
    tuned = _encoder_state(checkpoint.load(out / "classifier.pt")["model"], "encoders.image.")
    assert not torch.equal(pretrained["features.2.0.weight"], tuned["features.2.0.weight"])


@pytest.mark.parametrize("mode, frozen_prefixes", [("frozen", ("features.",)), ("partial", ("features.0.", "features.1."))])
def test_frozen_parameters_stay_bit_identical(run_dir, mode, frozen_prefixes):
    assert main(["finetune", str(run_dir), "labels=3", f"mode={mode}", "unfreeze_last=1", f"name={mode}", *FAST]) == 0
    pretrained = _encoder_state(checkpoint.latest(run_dir / "checkpoints")[1]["model"], "encoders.image.")
    tuned = _encoder_state(checkpoint.load(run_dir / "finetune" / mode / "classifier.pt")["model"], "encoders.image.")
    frozen = [k for k in pretrained if k.startswith(frozen_prefixes)]
    assert frozen and all(torch.equal(pretrained[k], tuned[k]) for k in frozen)  # incl. BatchNorm statistics
    if mode == "partial":
        assert not torch.equal(pretrained["features.2.0.weight"], tuned["features.2.0.weight"])


def test_semi_supervised_and_from_scratch_run(run_dir):
    assert main(["finetune", str(run_dir), "labels=2", "mode=semi", "pseudo_threshold=0.0", "name=semi",
                 "unlabelled_batch_size=32", *FAST]) == 0
    summary = json.loads((run_dir / "finetune" / "semi" / "summary.json").read_text())
    assert summary["semi"] and summary["unlabelled_items"] == 1258 - 0  # val_fraction 0.2 of 2 per class → no val
    records = [json.loads(line) for line in (run_dir / "finetune" / "semi" / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["train/pseudo_mask_rate"] == 1.0  # threshold 0 keeps every pseudo-label
    assert "train/ssl_loss" in records[0]
    assert main(["finetune", str(run_dir), "labels=2", "from_scratch=true", "name=scratch", *FAST]) == 0
    tuned = checkpoint.load(run_dir / "finetune" / "scratch" / "classifier.pt")["model"]
    pretrained = checkpoint.latest(run_dir / "checkpoints")[1]["model"]
    assert not torch.equal(tuned["encoders.image.features.0.0.weight"], pretrained["encoders.image.features.0.0.weight"])


def test_transfer_adapts_another_dataset_to_the_encoder(run_dir):
    # digits rendered as 16×16 RGB: resized and converted back to what the 8×8 grey encoder read in pretraining
    assert main(["finetune", str(run_dir), "data=digits", "data.size=16", "data.channels=3", "labels=2",
                 "name=transfer", *FAST]) == 0
    config = yaml.safe_load((run_dir / "finetune" / "transfer" / "config.yaml").read_text())
    assert config["data"]["size"] == 16 and config["data"]["channels"] == 3
    assert 0 <= json.loads((run_dir / "finetune" / "transfer" / "summary.json").read_text())["test/accuracy"] <= 1


@pytest.mark.parametrize("args, message", [
    (["labels=0.001"], "labels=0.001 leaves class 'zero' empty"),
    (["lables=0.1"], "did you mean labels"),
    (["mode=semi", "labels=1", "mode=frozen", "semi=true"], "use mode=full or mode=partial"),
    (["mode=linear"], "mode must be one of frozen, partial, full, semi"),
    (["data=fashion_mnist", "data.root=/nonexistent"], "does not exist"),
])
def test_bad_inputs_fail_with_one_line(run_dir, capsys, args, message):
    assert main(["finetune", str(run_dir), *args, *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_checkpoint_path_layer_decay_and_mlp_head(run_dir):
    ckpt = checkpoint.checkpoints(run_dir / "checkpoints")[-1]
    assert main(["finetune", str(ckpt), "labels=2", "mode=partial", "unfreeze_last=2", "layer_decay=0.5",
                 "head_hidden=16", "name=decay", *FAST]) == 0
    summary = json.loads((run_dir / "finetune" / "decay" / "summary.json").read_text())
    assert summary["trainable_units"] == ["features.1", "features.2"] and summary["checkpoint"] == str(ckpt)
    assert main(["finetune"]) == 2


def test_speech_transfers_to_a_folder_of_recordings_at_another_rate(tmp_path, capsys):
    """An audio encoder pretrained on 8 kHz spoken digits fine-tunes on a user's folder of 16 kHz recordings
    (one folder per class): the clips are read at the run's rate and clip length unless told otherwise."""
    import numpy as np
    import soundfile as sf

    run = tmp_path / "speech"
    assert main(["pretrain", f"run_dir={run}", "data=trimodal_digits", "encoder=trimodal", "~encoder.image",
                 "~encoder.text", "encoder.audio.width=4", "objective.simclr.modality=audio",
                 "objective.simclr.augment=audio_default", "objective.simclr.augment_kwargs={}", "trainer.steps=2",
                 "trainer.warmup_steps=1", "trainer.checkpoint_every=0", "trainer.progress=false",
                 "data.batch_size=16", "logger.mode=disabled", "eval.plot=false", "eval.baselines=false"]) == 0
    rng = np.random.default_rng(0)
    for label, hz in (("low", 300.0), ("high", 1200.0)):  # two "words": tones with noise, 0.8 s at 16 kHz
        (tmp_path / "clips" / label).mkdir(parents=True)
        for i in range(10):
            t = np.arange(12800) / 16000
            wave = 0.5 * np.sin(2 * np.pi * hz * (1 + 0.05 * rng.standard_normal()) * t) + 0.05 * rng.standard_normal(t.size)
            sf.write(tmp_path / "clips" / label / f"take{i}.wav", wave.astype(np.float32), 16000)
    assert main(["finetune", str(run), "data=audio_folder", f"data.root={tmp_path / 'clips'}", "labels=4",
                 "name=folder", *FAST]) == 0
    out = run / "finetune" / "folder"
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["data"]["name"] == "audio_folder" and config["data"]["sample_rate"] == 8000
    summary = json.loads((out / "summary.json").read_text())
    assert summary["modality"] == "audio" and 0.0 <= summary["test/accuracy"] <= 1.0
    # a rate the encoder did not learn from is refused in one line that says what to set
    assert main(["finetune", str(run), "data=audio_folder", f"data.root={tmp_path / 'clips'}",
                 "data.sample_rate=16000", "labels=4", *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "(16000,) but the encoder was pretrained on (8000,)" in err and "leave data.sample_rate" in err, err


def test_frozen_head_uses_the_probe_solver_and_scores_at_least_the_probe(run_dir):
    from omegaconf import OmegaConf

    from mmssl.build import build_data
    from mmssl.eval.probes import extract_features, linear_probe_accuracy
    from mmssl.inference import load_run

    assert main(["finetune", str(run_dir), "labels=1.0", "mode=frozen", "name=frozen_all", *FAST]) == 0
    summary = json.loads((run_dir / "finetune" / "frozen_all" / "summary.json").read_text())
    assert summary["solver"] == "probe" and summary["labelled/val_items"] == 0 and summary["steps_run"] == 0
    run = load_run(run_dir)
    data = build_data(OmegaConf.create(run.config))
    train = extract_features(run.encoders["image"], data.train, "image")
    test = extract_features(run.encoders["image"], data.test, "image")
    probe = linear_probe_accuracy(*train, *test, C=float(run.config.eval.linear_probe_C))
    assert summary["test/accuracy"] >= probe - 1e-9  # same features, same solver: never below the probe
    # the SGD head on the same frozen features, for contrast, is what the probe solver replaces
    assert main(["finetune", str(run_dir), "labels=1.0", "mode=frozen", "solver=sgd", "name=frozen_sgd", *FAST]) == 0
    sgd = json.loads((run_dir / "finetune" / "frozen_sgd" / "summary.json").read_text())
    assert sgd["solver"] == "sgd" and sgd["steps_run"] > 0


def test_few_labels_train_a_fixed_budget_without_validation(run_dir):
    assert main(["finetune", str(run_dir), "labels=5", "name=few", *FAST]) == 0
    summary = json.loads((run_dir / "finetune" / "few" / "summary.json").read_text())
    assert summary["labelled/val_items"] == 0 and summary["labelled/train_items"] == 50
    assert summary["early_stopping"] is False and summary["steps_run"] == 4


@pytest.mark.parametrize("args, message", [
    (["per_group=true"], "per_group=true needs a dataset with groups"),
    (["solver=probe", "mode=full"], "solver=probe fits a linear head on frozen features"),
    (["solver=adam"], "solver must be auto, probe or sgd"),
])
def test_solver_and_group_errors(run_dir, capsys, args, message):
    assert main(["finetune", str(run_dir), *args, *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
