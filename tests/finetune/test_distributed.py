"""Fine-tuning on two gloo ranks (each half of every batch, DistributedDataParallel) equals one process."""

import os

import torch
import torch.multiprocessing as mp

from mmssl import checkpoint
from mmssl.config import compose, to_container
from mmssl.finetune import finetune, make_config
from tests.gloo import free_port
from tests.train.test_distributed import _overrides


def _cfg(tmp):
    # LayerNorm ViT from scratch, no augmentation, no early stopping: nothing depends on per-rank streams
    pre = compose("pretrain", _overrides(tmp / "pre"))
    return make_config(to_container(pre), ["from_scratch=true", "augment_labelled=false", "steps=3", "eval_every=3",
                                           "batch_size=16", "labels=10", "val_fraction=0", "patience=0",
                                           "logger.mode=disabled", "lr=0.01", "name=ft"])


def _worker(rank, world, port, tmp):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    try:
        finetune(_cfg(tmp), None, tmp / "ddp")
    finally:
        torch.distributed.destroy_process_group()


def test_two_rank_finetune_matches_one_process(tmp_path):
    finetune(_cfg(tmp_path), None, tmp_path / "single")
    mp.start_processes(_worker, args=(2, free_port(), tmp_path), nprocs=2, join=True, start_method="fork")
    single = checkpoint.load(tmp_path / "single" / "ft" / "classifier.pt")["model"]
    ddp = checkpoint.load(tmp_path / "ddp" / "ft" / "classifier.pt")["model"]
    assert set(single) == set(ddp)
    # AdamW turns round-off-sized gradients into ±lr steps: the attention key bias has an exactly zero
    # gradient (softmax is shift-invariant), so its entries only carry noise and are left out; a handful
    # of other near-zero-gradient entries may flip the same way, so 99.9 % of entries must agree.
    width = 32
    key_bias = "encoders.image.visual.transformer.resblocks.0.attn.in_proj_bias"
    agree, total = 0, 0
    for name, value in single.items():
        a, b = ddp[name].float(), value.float()
        if name == key_bias:
            a, b = torch.cat([a[:width], a[2 * width:]]), torch.cat([b[:width], b[2 * width:]])
        agree += int(torch.isclose(a, b, atol=1e-5, rtol=1e-4).sum())
        total += a.numel()
    assert agree / total > 0.999, (agree, total)
    assert torch.allclose(ddp["head.weight"], single["head.weight"], atol=1e-5, rtol=1e-4)
    assert single["head.weight"].abs().sum() > 0 and total > 10_000
