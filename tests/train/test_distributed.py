"""Two gloo processes on CPU train exactly like one process on the same global batch, through torch's
DistributedDataParallel and through FSDP2 (``trainer.distributed=fsdp``), and resume bit-identically."""

import os

import pytest
import torch
import torch.multiprocessing as mp

from mmssl.config import compose
from mmssl.logging import RunLogger
from mmssl.train.trainer import Trainer
from tests.gloo import free_port


def _overrides(run_dir):
    # BatchNorm statistics are per rank by design (as in DDP without SyncBatchNorm), so the equivalence is
    # shown on a LayerNorm ViT with a linear projector; augmentation is off so views do not depend on the
    # per-rank random streams.
    return [f"run_dir={run_dir}", "logger.mode=disabled", "encoder=open_clip_vit", "encoder.image.config.width=32",
            "encoder.image.config.layers=1", "encoder.image.config.head_width=16", "encoder.image.embed_dim=16",
            "objective.simclr.projection_layers=1", "objective.simclr.augment=identity",
            "objective.simclr.augment_kwargs={}", "trainer.steps=3", "trainer.warmup_steps=1",
            "trainer.checkpoint_every=0", "trainer.progress=false", "data.batch_size=16", "eval.plot=false",
            "trainer.optimizer=sgd", "trainer.lr=0.5"]


def _train(run_dir, *extra):
    cfg = compose("pretrain", [*_overrides(run_dir), *extra])
    trainer = Trainer(cfg, run_dir)
    logger = RunLogger(run_dir, None, mode="disabled", enabled=trainer.rank == 0)
    trainer.fit(logger)
    logger.close()
    return trainer


def _worker(rank, world, port, run_dir, out, extra=()):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    trainer = _train(run_dir, *extra)
    if rank == 0:
        state = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        torch.save(state | {"__wrapper__": torch.tensor([ord(c) for c in type(trainer.forward_module).__name__])}, out)
    torch.distributed.destroy_process_group()


def _wrapper(state: dict) -> str:
    return "".join(chr(c) for c in state.pop("__wrapper__").tolist())


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_gloo_ranks_match_one_process(tmp_path, strategy):
    single = _train(tmp_path / "single").model.state_dict()
    out = tmp_path / "ddp_state.pt"
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path / "ddp"), str(out), (f"trainer.distributed={strategy}",)),
             nprocs=2, join=True)
    ddp = torch.load(out, weights_only=True)
    # the step ran through torch's wrapper: DDP's module, or the FSDP2-sharded model class
    assert _wrapper(ddp) == ("DistributedDataParallel" if strategy == "ddp" else "FSDPSSLModel")
    assert set(ddp) == set(single)
    for name, value in single.items():
        assert torch.allclose(ddp[name], value, atol=1e-5, rtol=1e-4), name
    start = compose("pretrain", _overrides(tmp_path / "init"))
    torch.manual_seed(int(start.seed))
    from mmssl.build import build_model

    initial = build_model(start).state_dict()
    assert any(not torch.equal(initial[k], v) for k, v in single.items())  # training did move the weights
    assert (tmp_path / "ddp" / "checkpoints").exists()  # rank 0 wrote the final checkpoint


def _ddp(run_dir, *extra):
    """Train on two forked gloo ranks; rank 0's final state dict."""
    out = run_dir.parent / f"{run_dir.name}_state.pt"
    mp.start_processes(_worker, args=(2, free_port(), str(run_dir), str(out), extra), nprocs=2, join=True,
                       start_method="fork")
    return torch.load(out, weights_only=True)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_resume_under_ddp_is_bit_identical(tmp_path, strategy):
    # real augmentation, so every rank's own random stream must be restored for the runs to agree;
    # AdamW under FSDP: its sharded moments go through the whole-tensor checkpoint and back
    extra = ("objective.simclr.augment=simclr", "trainer.steps=4", f"trainer.distributed={strategy}")
    if strategy == "fsdp":
        extra += ("trainer.optimizer=adamw", "trainer.lr=1e-3")
    straight = _ddp(tmp_path / "straight", *extra)
    _ddp(tmp_path / "stopped", *extra, "trainer.checkpoint_every=2")
    from mmssl import checkpoint

    ckpts = checkpoint.checkpoints(tmp_path / "stopped" / "checkpoints")
    assert [p.name for p in ckpts] == ["step_00000002.pt", "step_00000004.pt"]
    ckpts[-1].unlink()  # as if killed between step 2 and step 4
    assert len(checkpoint.load(ckpts[0])["rng_per_rank"]) == 2
    resumed = _ddp(tmp_path / "stopped", *extra, "trainer.checkpoint_every=2", "resume=true")
    assert _wrapper(straight) == _wrapper(resumed)
    for name, value in straight.items():
        assert torch.equal(resumed[name], value), name


def _sync_bn_worker(rank, world, port, run_dir):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    try:
        Trainer(compose("pretrain", [f"run_dir={run_dir}", "logger.mode=disabled", "trainer.sync_batchnorm=true",
                                     "device=cpu", "data.batch_size=16"]), run_dir)  # convnet + BN projector
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def test_sync_batchnorm_on_cpu_says_it_needs_cuda(tmp_path):
    # torch's SyncBatchNorm has no CPU kernel: the run stops at build time with one actionable line
    with pytest.raises(mp.ProcessRaisedException, match="sync_batchnorm=true needs CUDA"):
        mp.start_processes(_sync_bn_worker, args=(2, free_port(), str(tmp_path / "run")), nprocs=2, join=True,
                           start_method="fork")


def test_wrap_converts_batchnorm_and_rejects_unknown_strategies(monkeypatch):
    from mmssl.errors import ConfigError
    from mmssl.train import distributed

    with pytest.raises(ConfigError, match="did you mean|must be one of"):
        distributed.wrap(torch.nn.Linear(2, 2), torch.device("cpu"), "dpp")
    # at world size 1 nothing is wrapped or converted (SyncBatchNorm would fall back to BatchNorm anyway)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    assert distributed.wrap(model, torch.device("cpu"), "ddp", sync_batchnorm=True) is model
