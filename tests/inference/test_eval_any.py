"""A trained run on anyone's data: `mmssl eval RUN data=…`, `mmssl embed`, `load_run` and exports with joint heads."""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmssl.cli import main
from mmssl.data.images import DIGIT_NAMES
from mmssl.data.trimodal import SPOKEN_DIGITS_DIR
from mmssl.errors import ConfigError
from mmssl.inference import load_run
from tests.conftest import tiny_overrides

TINY_BIND = ["encoder=trimodal", "data=trimodal_digits", "encoder.image.width=4", "encoder.audio.width=4",
             "encoder.text.dim=16", "encoder.text.heads=2", "objective=bind", "logger.mode=disabled",
             "trainer.steps=2", "trainer.warmup_steps=1", "trainer.log_every=1", "trainer.checkpoint_every=0",
             "trainer.progress=false", "data.batch_size=32", "eval.plot=false", "eval.baselines=false"]


@pytest.fixture(scope="module")
def bind_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("bind") / "run"
    assert main(["pretrain", *TINY_BIND, f"run_dir={run}"]) == 0
    return run


@pytest.fixture(scope="module")
def simclr_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("simclr") / "run"
    assert main(["pretrain", *tiny_overrides(run)]) == 0
    return run


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    """150 real digits as 16×12 RGB PNGs in class folders named by digit, files w<writer>_<i>.png."""
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("digits_png")
    d = load_digits()
    for i in range(150):
        folder = root / DIGIT_NAMES[d.target[i]]
        folder.mkdir(exist_ok=True)
        img = Image.fromarray(np.uint8(d.images[i] * 255 / 16)).resize((16, 12)).convert("RGB")
        img.save(folder / f"w{i % 3}_{i}.png")
    return root


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    for f in sorted(SPOKEN_DIGITS_DIR.glob("*.flac"))[::10]:
        shutil.copy(f, root / f.name)
    return root


@pytest.fixture(scope="module")
def paired_manifest(image_dir, audio_dir):
    """60 (image, audio, text, label) rows paired by class."""
    images = {c: sorted((image_dir / w).glob("*.png")) for c, w in enumerate(DIGIT_NAMES)}
    clips = {c: sorted(audio_dir.glob(f"{c}_*.flac")) for c in range(10)}
    rows = ["image,audio,text,label"]
    for c in range(10):
        for k in range(6):
            rows.append(f"{images[c][k % len(images[c])]},{clips[c][k % len(clips[c])]},a {DIGIT_NAMES[c]},{DIGIT_NAMES[c]}")
    path = image_dir.parent / "paired.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def _hashes(run: Path) -> dict[str, str]:
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run.rglob("*")) if p.is_file() and "eval" not in p.relative_to(run).parts}


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


# -- mmssl eval RUN data=… ---------------------------------------------------------------------------
def test_eval_on_an_image_folder_writes_only_its_eval_folder(bind_run, image_dir, capsys):
    before = _hashes(bind_run)
    argv = ["eval", str(bind_run), "data=image_folder", f"data.root={image_dir}", r"data.group_pattern='/(w\d)_'",
            "data.test_groups=[w0]", "eval.baselines=true", "eval.templates=['a handwritten {w}','the digit {w}']"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "k-means NMI" in out and "raw input" in out and "zeroshot/image_accuracy" in out
    folder = bind_run / "eval" / f"image_folder-{image_dir.name}"
    record = json.loads((folder / "results.json").read_text())
    r = record["results"]
    for rep in ("ssl", "raw", "random"):
        for key in ("linear_probe_accuracy", "knn_accuracy", "kmeans_nmi"):
            assert 0.0 <= r[f"image/{rep}/{key}"] <= 1.0
        assert -1.0 <= r[f"image/{rep}/kmeans_ari"] <= 1.0
    assert r["image/raw/linear_probe_accuracy"] > 0.5  # real digits: the pipeline read the images right
    assert 0.0 <= r["zeroshot/image_accuracy"] <= 1.0
    assert record["data"]["test_groups"] == ["w0"] and record["data"]["channels"] == 1 and record["data"]["size"] == 8
    assert (folder / "results.md").read_text().startswith("| modality |")
    assert (folder / "plots" / "crossmodal_similarity.png").stat().st_size > 0
    assert _hashes(bind_run) == before  # nothing in the run's own files changed


def test_eval_on_paired_data_scores_retrieval_for_every_pair(bind_run, paired_manifest):
    from mmssl.eval.transfer import run

    results, folder = run(bind_run, ["data=manifest", f"data.path={paired_manifest}", "eval.name=paired"])
    assert folder == bind_run / "eval" / "paired"
    for a in ("image", "audio", "text"):
        for b in ("image", "audio", "text"):
            if a != b:
                assert 0.0 <= results[f"retrieval/{a}_to_{b}/R@1"] <= results[f"retrieval/{a}_to_{b}/R@10"] <= 1.0
    assert "zeroshot/image_accuracy" in results and "zeroshot/audio_accuracy" in results
    assert (folder / "plots" / "crossmodal_similarity.png").exists()
    # several templates averaged (CLIP's ensembling) give another class embedding than one template alone
    one, _ = run(bind_run, ["data=manifest", f"data.path={paired_manifest}", "eval.name=t1",
                            "eval.templates=['{w}']", "eval.kmeans=false"])
    assert "image/ssl/kmeans_nmi" not in one
    loaded = load_run(bind_run)
    assert not torch.allclose(loaded.class_embeddings(DIGIT_NAMES, ["{w}"]),
                              loaded.class_embeddings(DIGIT_NAMES, ["{w}", "a handwritten {w}"]))


def test_eval_regression_on_an_audio_folder_with_held_out_speakers(bind_run, audio_dir):
    from mmssl.eval.transfer import run

    results, folder = run(bind_run, ["data=audio_folder", f"data.root={audio_dir}", "data.test_groups=[s000,s050]",
                                     "eval.task=regression"])
    assert "audio/ssl/ridge_r2" in results and "audio/ssl/knn_r2" in results
    assert not any("linear_probe" in k for k in results)
    record = json.loads((folder / "results.json").read_text())
    assert record["data"]["sample_rate"] == 8000  # read at the encoder's rate


def test_eval_of_the_runs_own_data_key_edits_it(simclr_run):
    from mmssl.eval.transfer import eval_config

    cfg = eval_config(load_run(simclr_run).config, ["data.test_fraction=0.5", "eval.knn_k=3"])
    assert cfg.data.name == "digits" and cfg.data.test_fraction == 0.5 and cfg.eval.knn_k == 3
    assert cfg.eval.task == "classification"  # a key the run's stored config predates comes from the defaults


@pytest.mark.parametrize("make_argv, message", [
    (lambda r, a: ["eval", str(r["simclr"]), "data=audio_folder", f"data.root={a}"],
     "has ['audio'] but the run has encoders for ['image'] only; evaluate on data of one of those modalities"),
    (lambda r, a: ["eval", str(r["bind"]), "data=audio_folder", f"data.root={a}", "data.test_groups=[nobody]"],
     "test_groups ['nobody'] not found; the groups are: s000, s010"),
    (lambda r, a: ["eval", str(r["simclr"]), "data=digits", "eval.zeroshot=true"],
     "zero-shot is impossible"),
    (lambda r, a: ["eval", str(r["simclr"]), "trainer.steps=3"], "mmssl eval takes data and eval overrides"),
    (lambda r, a: ["eval", str(r["simclr"]), "data.test_fractoin=0.5"], "did you mean data.test_fraction"),
    (lambda r, a: ["eval", str(r["simclr"]), "data.test_fraction=half"], "must be float"),
    (lambda r, a: ["eval", str(r["simclr"]), "eval.task=ranking"], "eval.task must be one of classification, regression"),
    (lambda r, a: ["eval", str(r["bind"]), "data=digits", "eval.templates=['nothing']"], "name no class"),
    (lambda r, a: ["eval", str(r["simclr"]), "data=text_corpus", "data.path=/nonexistent.txt"], "cannot read text corpus"),
])
def test_eval_bad_input_is_one_line(bind_run, simclr_run, audio_dir, capsys, make_argv, message):
    err = _error(capsys, make_argv({"bind": bind_run, "simclr": simclr_run}, audio_dir))
    assert message in err, err
    assert not (simclr_run / "eval").exists() or not any((simclr_run / "eval").iterdir())


# -- export, load_run and zero-shot from the export alone --------------------------------------------
def test_export_keeps_joint_heads_and_matches_the_run(bind_run, image_dir, tmp_path, capsys):
    out = tmp_path / "export"
    assert main(["export", str(bind_run), "--out", str(out)]) == 0
    assert {"joint.safetensors", "config.json", "image.safetensors", "audio.safetensors"} <= {p.name for p in out.iterdir()}
    meta = json.loads((out / "config.json").read_text())
    assert meta["joint"]["objective"] == "bind" and sorted(meta["joint"]["modalities"]) == ["audio", "image", "text"]
    assert meta["inputs"]["image"] == {"channels": 1, "size": 8} and meta["inputs"]["audio"]["sample_rate"] == 8000
    run, exported = load_run(bind_run), load_run(out)
    assert sorted(exported.heads) == ["audio", "image", "text"]
    model = run.extra["model"]
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():  # the run's own objective's joint embedding of the same images
        expected = torch.nn.functional.normalize(model.objectives["bind"].projections["image"](
            model.encoders["image"](x).pooled), dim=-1)
    assert torch.allclose(exported.encode("image", x), expected, atol=1e-6)
    assert exported.joint.scale("image", "text") == pytest.approx(run.joint.scale("image", "text"))
    files = sorted(str(p) for p in image_dir.rglob("*.png"))[:12]
    assert torch.allclose(run.embed("image", files), exported.embed("image", files), atol=1e-6)
    # zero-shot and retrieval from the export alone
    predicted = exported.classify("image", files, DIGIT_NAMES)
    assert predicted.shape == (12,) and int(predicted.max()) < 10
    sims = exported.similarity(exported.embed("image", files), exported.embed("text", ["a seven", "a three"]))
    assert sims.shape == (12, 2) and float(sims.abs().max()) <= 1.0 + 1e-6
    # `mmssl eval EXPORT data=…` works too, writing under the export folder
    assert main(["eval", str(out), "data=digits", "eval.zeroshot=true"]) == 0
    assert "zeroshot/image_accuracy" in json.loads((out / "eval" / "digits" / "results.json").read_text())["results"]


def test_export_without_heads_asked_for_zero_shot(bind_run, simclr_run, tmp_path, capsys):
    out = tmp_path / "old_export"
    assert main(["export", str(bind_run), "--out", str(out)]) == 0
    meta = json.loads((out / "config.json").read_text())
    del meta["joint"]  # as written before exports kept the joint space
    (out / "config.json").write_text(json.dumps(meta))
    (out / "joint.safetensors").unlink()
    run = load_run(out)
    assert run.joint is None and len(run.heads) == 0
    with pytest.raises(ConfigError, match="re-export the run with `mmssl export RUN --out DIR`"):
        run.classify("image", torch.rand(2, 1, 8, 8), DIGIT_NAMES)
    err = _error(capsys, ["eval", str(out), "data=digits", "eval.zeroshot=true"])
    assert "no joint-space heads" in err and "mmssl export" in err
    simclr_export = tmp_path / "simclr_export"
    assert main(["export", str(simclr_run), "--out", str(simclr_export)]) == 0
    assert "no joint-space heads" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="zero-shot needs a text encoder and joint-space heads"):
        load_run(simclr_export).class_embeddings(DIGIT_NAMES)


def test_open_clip_image_tower_export_loads_into_open_clip(tmp_path):
    from open_clip.model import CLIPVisionCfg, _build_vision_tower  # noqa: F401  (open_clip itself builds the tower)

    from mmssl import checkpoint
    from mmssl.build import build_model
    from mmssl.config import compose, to_container
    from mmssl.inference import open_clip_vision_tower

    cfg = compose("pretrain", ["encoder=open_clip_vit", "encoder.image.embed_dim=16", "encoder.image.config.width=32",
                               "encoder.image.config.layers=1", "encoder.image.config.head_width=16"])
    model = build_model(cfg)
    checkpoint.save({"model": model.state_dict(), "config": to_container(cfg), "step": 0},
                    tmp_path / "run" / "checkpoints" / "step_00000000.pt")
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "out")]) == 0
    tower = open_clip_vision_tower(tmp_path / "out")
    assert type(tower).__module__.startswith("open_clip")
    encoder = load_run(tmp_path / "out").encoders["image"]
    x = torch.rand(3, 1, 8, 8)
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    with torch.no_grad():
        ours = encoder(x).pooled
        theirs = tower((x.expand(-1, 3, -1, -1) - mean) / std)
    assert torch.allclose(ours, theirs, atol=1e-5)
    with pytest.raises(Exception, match="holds no open_clip image tower"):
        open_clip_vision_tower_of_convnet(tmp_path)


def open_clip_vision_tower_of_convnet(tmp_path):
    from mmssl import checkpoint
    from mmssl.build import build_model
    from mmssl.config import compose, to_container
    from mmssl.inference import open_clip_vision_tower

    cfg = compose("pretrain", ["encoder.image.width=4"])
    checkpoint.save({"model": build_model(cfg).state_dict(), "config": to_container(cfg), "step": 0},
                    tmp_path / "conv" / "checkpoints" / "step_00000000.pt")
    main(["export", str(tmp_path / "conv"), "--out", str(tmp_path / "conv_out")])
    return open_clip_vision_tower(tmp_path / "conv_out")


# -- mmssl embed -------------------------------------------------------------------------------------
def test_embed_cli_writes_npy_and_safetensors(bind_run, image_dir, audio_dir, tmp_path, capsys):
    from safetensors.torch import load_file

    assert main(["embed", str(bind_run), str(image_dir), "--out", str(tmp_path / "z.npy"), "--batch-size", "64"]) == 0
    assert "150 joint-space image embeddings (64-d)" in capsys.readouterr().out
    z = np.load(tmp_path / "z.npy")
    names = (tmp_path / "z.npy.inputs.txt").read_text().splitlines()
    assert z.shape == (150, 64) and len(names) == 150 and names == sorted(names)
    assert np.allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-5)
    run = load_run(bind_run)
    assert np.allclose(z[:3], run.embed("image", names[:3]).numpy(), atol=1e-6)
    clips = sorted(str(p) for p in audio_dir.glob("*.flac"))[:5]
    assert main(["embed", str(bind_run), *clips, "--out", str(tmp_path / "a.safetensors"), "--pooled"]) == 0
    pooled = load_file(str(tmp_path / "a.safetensors"))["embeddings"]
    assert pooled.shape == (5, run.encoders["audio"].dim)
    texts = tmp_path / "t.txt"
    texts.write_text("a seven\nthe digit three\n")
    assert main(["embed", str(bind_run), str(texts), "--out", str(tmp_path / "t.npy")]) == 0
    assert np.load(tmp_path / "t.npy").shape == (2, 64)


def test_embed_a_manifest_column(bind_run, paired_manifest, tmp_path):
    assert main(["embed", str(bind_run), str(paired_manifest), "--modality", "audio", "--out", str(tmp_path / "a.npy")]) == 0
    z = np.load(tmp_path / "a.npy")
    assert z.shape == (60, 64)
    assert np.allclose(z[:2], load_run(bind_run).embed("audio", paired_manifest).numpy()[:2], atol=1e-6)


def test_embed_parquet_and_bad_input(bind_run, image_dir, tmp_path, capsys):
    try:
        import pyarrow.parquet as pq
    except ImportError:
        pq = None
    if pq is None:
        err = _error(capsys, ["embed", str(bind_run), str(image_dir), "--out", str(tmp_path / "z.parquet")])
        assert "needs pyarrow" in err
    else:
        assert main(["embed", str(bind_run), str(image_dir), "--out", str(tmp_path / "z.parquet")]) == 0
        assert pq.read_table(tmp_path / "z.parquet").num_rows == 150
    assert "write .npy, .parquet or .safetensors" in _error(capsys, ["embed", str(bind_run), str(image_dir), "--out", "z.csv"])
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copy(next(image_dir.rglob("*.png")), mixed / "a.png")
    shutil.copy(next(SPOKEN_DIGITS_DIR.glob("*.flac")), mixed / "b.flac")
    assert "pass --modality" in _error(capsys, ["embed", str(bind_run), str(mixed), "--out", str(tmp_path / "m.npy")])
    (tmp_path / "t.csv").write_text("text,label\nhello,1\n")
    assert "no 'image' column" in _error(capsys, ["embed", str(bind_run), str(tmp_path / "t.csv"), "--modality", "image",
                                                  "--out", str(tmp_path / "m.npy")])
    assert "the run has no 'obs' encoder" in _error(capsys, ["embed", str(bind_run), str(mixed), "--modality", "obs",
                                                             "--out", str(tmp_path / "m.npy")])
