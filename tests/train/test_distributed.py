"""Two gloo processes on CPU train exactly like one process on the same global batch."""

import os

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


def _train(run_dir):
    cfg = compose("pretrain", _overrides(run_dir))
    trainer = Trainer(cfg, run_dir)
    logger = RunLogger(run_dir, None, mode="disabled", enabled=trainer.rank == 0)
    trainer.fit(logger)
    logger.close()
    return trainer


def _worker(rank, world, port, run_dir, out):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    trainer = _train(run_dir)
    if rank == 0:
        torch.save({k: v.clone() for k, v in trainer.model.state_dict().items()}, out)
    torch.distributed.destroy_process_group()


def test_two_gloo_ranks_match_one_process(tmp_path):
    single = _train(tmp_path / "single").model.state_dict()
    out = tmp_path / "ddp_state.pt"
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path / "ddp"), str(out)), nprocs=2, join=True)
    ddp = torch.load(out, weights_only=True)
    assert set(ddp) == set(single)
    for name, value in single.items():
        assert torch.allclose(ddp[name], value, atol=1e-5, rtol=1e-4), name
    start = compose("pretrain", _overrides(tmp_path / "init"))
    torch.manual_seed(int(start.seed))
    from mmssl.train.build import build_model

    initial = build_model(start).state_dict()
    assert any(not torch.equal(initial[k], v) for k, v in single.items())  # training did move the weights
    assert (tmp_path / "ddp" / "checkpoints").exists()  # rank 0 wrote the final checkpoint
