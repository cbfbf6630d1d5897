"""mmssl.precision: config values, the measured auto choice and its cache, the run folder's record."""

import json

import pytest
import torch

from mmssl import precision as P
from mmssl.config import compose
from mmssl.errors import ConfigError
from mmssl.logging import RunLogger
from mmssl.train.trainer import Trainer
from tests.conftest import tiny_overrides


@pytest.fixture
def measured(monkeypatch, tmp_path):
    """auto measures (the suite's MMSSL_AUTO_PRECISION unset), caching in tmp_path/cache."""
    monkeypatch.delenv("MMSSL_AUTO_PRECISION", raising=False)
    monkeypatch.setenv("MMSSL_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def fake_workload(calls: list, bf16_slower: bool) -> P.Workload:
    """A workload whose bf16 step does (or does not) do 30x the work of its fp32 step."""
    def build():
        x = torch.randn(64, 64)

        def step(p: P.Precision) -> None:
            calls.append(p.name)
            for _ in range(30 if (p.name == "bf16") == bf16_slower else 1):
                x @ x
        return step
    return P.Workload(f"fake-{bf16_slower}", build)


@pytest.mark.parametrize("value, name, channels_last", [("fp32", "fp32", False), ("bf16", "bf16", True)])
def test_forced_values(value, name, channels_last):
    p = P.resolve_precision(value, "cpu")
    assert (p.name, p.channels_last, p.source) == (name, channels_last, "forced")
    assert p.dtype == {"fp32": torch.float32, "bf16": torch.bfloat16}[value]
    with p.autocast("cpu"):
        y = torch.ones(2, 2) @ torch.ones(2, 2)
    assert y.dtype == p.dtype
    assert p.grad_scaler("cpu") is None


def test_bad_value_and_fp16_on_cpu_are_one_line_errors():
    with pytest.raises(ConfigError, match=r"trainer.precision must be one of auto, fp32, bf16, fp16, got 'fp8'"):
        P.resolve_precision("fp8", "cpu")
    with pytest.raises(ConfigError, match=r"trainer.precision=fp16 needs CUDA .*use trainer.precision=bf16 or trainer.precision=fp32"):
        P.resolve_precision("fp16", "cpu")
    with pytest.raises(ConfigError, match="fp16 needs CUDA.*use bf16 or fp32"):
        P.Precision("fp16").grad_scaler("cpu")


def test_auto_picks_the_faster_candidate_and_caches_it(measured):
    calls: list = []
    fast_bf16 = P.resolve_precision("auto", "cpu", fake_workload(calls, bf16_slower=False))
    assert (fast_bf16.name, fast_bf16.channels_last, fast_bf16.source) == ("bf16", True, "probe")
    assert fast_bf16.probe["speedup"] > P.MARGIN and {"fp32", "bf16"} == set(calls)
    slow_bf16 = P.resolve_precision("auto", "cpu", fake_workload([], bf16_slower=True))
    assert (slow_bf16.name, slow_bf16.source) == ("fp32", "probe") and slow_bf16.probe["speedup"] < 1
    assert len(list(measured.glob("precision-*.json"))) == 2  # one file per workload
    calls.clear()
    cached = P.resolve_precision("auto", "cpu", fake_workload(calls, bf16_slower=False))
    assert calls == [] and cached.source == "cache" and cached.probe == fast_bf16.probe


def test_corrupt_or_foreign_cache_is_reprobed_quietly(measured):
    work = fake_workload([], bf16_slower=False)
    path = P.cache_path("cpu", work.name)
    path.parent.mkdir(parents=True)
    for bad in ("{not json", json.dumps({"version": P.CACHE_VERSION, "key": {"cpu": "another one"},
                                         "precision": {"name": "fp32"}}), json.dumps([1, 2])):
        path.write_text(bad)
        chosen = P.resolve_precision("auto", "cpu", work)
        assert chosen.source == "probe" and chosen.name == "bf16"
        assert P.read_cache("cpu", work.name) == P.Precision("bf16", True, "cache", chosen.probe)  # rewritten
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_standard_probe_runs_and_reports_figures(measured):
    chosen = P.resolve_precision("auto", "cpu")
    assert chosen.name in ("fp32", "bf16") and chosen.source == "probe"
    assert chosen.probe["fp32_ms"] > 0 and chosen.probe["bf16_ms"] > 0
    assert chosen.name == ("bf16" if chosen.probe["speedup"] > P.MARGIN else "fp32")


def test_record_roundtrip_and_unreadable_record(tmp_path):
    p = P.Precision("bf16", True, "probe", {"speedup": 1.4})
    P.write_record(tmp_path, p)
    assert P.read_record(tmp_path) == P.Precision("bf16", True, "recorded", {"speedup": 1.4})
    assert P.read_record(tmp_path / "fresh") is None
    (tmp_path / P.RECORD).write_text('{"name": "fp8"}')
    with pytest.raises(ConfigError, match="precision.json is unreadable"):
        P.read_record(tmp_path)


def _pretrain(run_dir, *extra, resume=False):
    cfg = compose("pretrain", tiny_overrides(run_dir, f"resume={str(resume).lower()}", *extra))
    trainer = Trainer(cfg, run_dir)
    logger = RunLogger(run_dir, None, mode="disabled", resume=resume)
    trainer.fit(logger)
    logger.close()
    return trainer


def test_run_folder_records_the_precision_and_resume_reuses_it(tmp_path, monkeypatch):
    monkeypatch.setenv("MMSSL_AUTO_PRECISION", "bf16")  # what auto says when the run starts
    first = _pretrain(tmp_path / "run", "trainer.steps=3")
    record = json.loads((tmp_path / "run" / "precision.json").read_text())
    assert record == {"name": "bf16", "channels_last": True, "source": "env", "probe": {}}
    assert first.channels_last
    monkeypatch.setenv("MMSSL_AUTO_PRECISION", "fp32")  # auto (cache, probe, env) now says otherwise
    resumed = _pretrain(tmp_path / "run", "trainer.steps=6", resume=True)
    assert resumed.step == 6 and (resumed.precision.name, resumed.precision.source) == ("bf16", "recorded")
    assert json.loads((tmp_path / "run" / "precision.json").read_text()) == record  # the record is not rewritten
    fresh = _pretrain(tmp_path / "fresh", "trainer.steps=3")
    assert (fresh.precision.name, fresh.channels_last) == ("fp32", False)


def test_bf16_changes_the_numbers_and_channels_last_can_be_overridden(tmp_path):
    fp32 = _pretrain(tmp_path / "fp32", "trainer.steps=2", "trainer.precision=fp32")
    bf16 = _pretrain(tmp_path / "bf16", "trainer.steps=2", "trainer.precision=bf16", "trainer.channels_last=false")
    assert not bf16.channels_last
    a, b = fp32.model.state_dict(), bf16.model.state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())  # autocast really ran


def test_an_op_without_a_bf16_kernel_falls_back_to_fp32_under_auto_and_fails_when_forced(tmp_path, monkeypatch):
    original = Trainer.forward

    def forward(self, batch):  # a plugin's loss term with torch.pdist, which has no bf16 kernel on CPU
        loss, outputs = original(self, batch)
        z = torch.ones(4, 3, device=loss.device) @ torch.eye(3, device=loss.device)  # bf16 under autocast
        return loss + 0 * torch.pdist(z).sum(), outputs

    monkeypatch.setattr(Trainer, "forward", forward)
    monkeypatch.setenv("MMSSL_AUTO_PRECISION", "bf16")
    run = _pretrain(tmp_path / "auto", "trainer.steps=3")
    assert run.step == 3 and (run.precision.name, run.precision.source) == ("fp32", "fallback")
    record = json.loads((tmp_path / "auto" / "precision.json").read_text())
    assert (record["name"], record["probe"]["fallback_from"]) == ("fp32", "bf16") and "pdist" in record["probe"]["reason"]
    resumed = _pretrain(tmp_path / "auto", "trainer.steps=4", resume=True)  # the record, not auto's bf16 again
    assert resumed.step == 4 and resumed.precision.name == "fp32"
    with pytest.raises(ConfigError, match=r"trainer.precision=bf16: .*pdist.*use trainer.precision=fp32"):
        _pretrain(tmp_path / "forced", "trainer.steps=3", "trainer.precision=bf16")


def test_old_amp_key_says_what_replaced_it(tmp_path):
    with pytest.raises(ConfigError, match="trainer.amp was replaced by trainer.precision"):
        compose("pretrain", ["trainer.amp=bf16"])
    cfg = compose("pretrain", tiny_overrides(tmp_path, "+trainer.amp=bf16"))  # e.g. an older stored config
    with pytest.raises(ConfigError, match="trainer.amp was replaced by trainer.precision"):
        Trainer(cfg, tmp_path)


def _rank_choice(rank, port, out_dir):
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                      MMSSL_AUTO_PRECISION="bf16" if rank == 0 else "fp32")  # each rank's own probe would differ
    dist.init_process_group("gloo", rank=rank, world_size=2)
    chosen = P.for_run("auto", "cpu", None, resume=False)
    torch.save(chosen.to_json(), os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_every_rank_takes_rank_0s_choice(tmp_path):
    import torch.multiprocessing as mp

    from tests.gloo import free_port

    mp.start_processes(_rank_choice, args=(free_port(), str(tmp_path)), nprocs=2, join=True, start_method="fork")
    choices = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert choices[0] == choices[1] and choices[0]["name"] == "bf16"


def test_loss_scaler_path_trains_skips_overflow_and_resumes_exactly(tmp_path, monkeypatch):
    # fp16's GradScaler path of the step, on CPU: a scaler so large that the first scaled gradients overflow
    monkeypatch.setattr(P.Precision, "grad_scaler", lambda self, device: torch.amp.GradScaler("cpu", init_scale=1e38))
    straight = _pretrain(tmp_path / "a", "trainer.checkpoint_every=0")
    assert straight.step == 6 and straight.scaler.get_scale() < 1e38  # the overflowing step was skipped, scale halved
    _pretrain(tmp_path / "b", "trainer.checkpoint_every=3")
    from mmssl import checkpoint

    for p in checkpoint.checkpoints(tmp_path / "b" / "checkpoints"):
        if not p.name.endswith("00000003.pt"):
            p.unlink()
    assert "grad_scaler" in checkpoint.latest(tmp_path / "b" / "checkpoints")[1]
    resumed = _pretrain(tmp_path / "b", "trainer.checkpoint_every=3", resume=True)
    assert resumed.scaler.get_scale() == straight.scaler.get_scale()
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 needs CUDA")
def test_fp16_on_cuda_uses_a_loss_scaler(tmp_path):
    trainer = _pretrain(tmp_path, "device=cuda", "trainer.precision=fp16", "trainer.steps=2")
    assert trainer.precision.name == "fp16" and isinstance(trainer.scaler, torch.amp.GradScaler)
    assert P.resolve_precision("auto", "cuda").source == "device"


def test_pretraining_probe_times_the_runs_own_model_and_leaves_the_run_as_it_was(measured, tmp_path, monkeypatch):
    """auto's CPU probe runs (a copy of) the run's model on a batch of its data: a workload named per model,
    data config and batch, while the run's model, objective state and random stream are what they are
    without a probe."""
    extra = ("objective=moco_v2", "objective.moco_v2.queue_size=64")  # a queue: state the probe must not touch
    probed = Trainer(compose("pretrain", tiny_overrides(tmp_path / "probed", *extra)), tmp_path / "probed")
    after_probe = torch.get_rng_state()
    record = probed.precision.to_json()
    assert record["source"] == "probe" and record["probe"]["workload"].startswith("pretrain-")
    batch = compose("pretrain", tiny_overrides(tmp_path / "x", *extra)).data.batch_size
    assert record["probe"]["workload"].endswith(f"-b{min(batch, 64)}")
    monkeypatch.setenv("MMSSL_AUTO_PRECISION", record["name"])  # the same choice, without a probe
    plain = Trainer(compose("pretrain", tiny_overrides(tmp_path / "plain", *extra)), tmp_path / "plain")
    assert torch.equal(after_probe, torch.get_rng_state())
    a, b = probed.model.state_dict(), plain.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    monkeypatch.delenv("MMSSL_AUTO_PRECISION")
    other = Trainer(compose("pretrain", tiny_overrides(tmp_path / "other", *extra, "encoder.image.width=8")),
                    tmp_path / "other")
    assert other.precision.probe["workload"] != record["probe"]["workload"]  # another model, its own probe
