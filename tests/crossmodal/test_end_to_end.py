"""The configs compose and build, and `mmssl pretrain` runs on trimodal digits and reports cross-modal metrics."""

import pytest

from mmssl.build import build_model
from mmssl.config import compose

TINY = ["encoder=trimodal", "data=trimodal_digits", "encoder.image.width=4", "encoder.audio.width=4",
        "encoder.text.dim=16", "encoder.text.heads=2"]


@pytest.mark.parametrize("objective,pairs", [("clip", ["image_text"]), ("siglip", ["image_audio"]),
                                             ("bind", ["image_audio", "image_text", "audio_text"])])
def test_objective_configs_build(objective, pairs):
    cfg = compose("pretrain", [*TINY, f"objective={objective}"])
    model = build_model(cfg)
    obj = model.objectives[objective]
    assert ["_".join(p) for p in obj.pairs] == pairs
    assert obj.augments["image"].flip_p == 0.0  # the digits-friendly image kwargs came from data.augment
    assert model.encoders["audio"].sample_rate == cfg.data.sample_rate == 8000
    assert model.encoders["text"].context_length == cfg.data.context_length


def test_pretrain_reports_crossmodal_metrics(tmp_path):
    from mmssl.train.pretrain import main

    summary = main([*TINY, "objective=bind", f"run_dir={tmp_path}", "logger.mode=disabled", "trainer.steps=2",
                    "trainer.warmup_steps=1", "trainer.log_every=1", "trainer.checkpoint_every=0",
                    "trainer.progress=false", "data.batch_size=32", "eval.plot=false", "eval.baselines=false"])
    for pair in ("image_to_audio", "audio_to_text", "text_to_image"):
        assert 0.0 <= summary[f"eval/retrieval/{pair}/R@1"] <= summary[f"eval/retrieval/{pair}/R@10"] <= 1.0
    assert 0.0 <= summary["eval/zeroshot/audio_accuracy"] <= 1.0
    assert (tmp_path / "plots" / "crossmodal_similarity.png").exists()
