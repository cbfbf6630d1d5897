"""A tiny pretraining run that the fine-tuning tests of a module start from."""

import pytest
import torch

from mmssl.cli import main
from tests.conftest import tiny_overrides


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("pretrain")
    torch.manual_seed(0)
    assert main(["pretrain", *tiny_overrides(path)]) == 0
    return path
