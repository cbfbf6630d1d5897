import os

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
# precision=auto resolves to fp32 without probing: every test computes alike on every machine (tests of
# the probe itself unset it); nothing is cached in the user's ~/.cache. MMSSL_AUTO_PRECISION=bf16 pytest …
# runs the suite's auto runs in bf16 instead (exact-value tests then differ; kernels and fallbacks are checked)
os.environ.setdefault("MMSSL_AUTO_PRECISION", "fp32")
torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _cache_dir(tmp_path_factory):
    os.environ["MMSSL_CACHE_DIR"] = str(tmp_path_factory.mktemp("mmssl-cache"))
    yield


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def tiny_overrides(run_dir, *extra):
    """Overrides for a seconds-long pretraining run on digits."""
    return [f"run_dir={run_dir}", "logger.mode=disabled", "trainer.steps=6", "trainer.warmup_steps=2",
            "trainer.log_every=2", "trainer.checkpoint_every=3", "trainer.progress=false", "data.batch_size=32",
            "encoder.image.width=4", "eval.plot=false", "eval.baselines=false", *extra]
