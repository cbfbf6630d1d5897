"""What a plugin author or a script writes against ``import mmssl``, checked by mypy in CI (``.ci/run``).

Never imported or run (pytest does not collect it): it only has to type-check. Each ``# type: ignore[code]``
below marks a mistake the public API's types must catch; mypy runs with ``warn_unused_ignores``, so if an
annotation stopped catching it, the ignore would go unused and CI would fail.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, assert_type

import torch
from omegaconf import DictConfig
from torch import nn

import mmssl
from mmssl.data.base import ArrayDataset, DatasetSplits, split_dataset
from mmssl.inference import LoadedRun
from mmssl.rl.intrinsic.base import IntrinsicReward
from mmssl.rl.storage import Obs


# -- a plugin: one part of each kind ---------------------------------------------------------------
@mmssl.register_encoder("typed_mlp", modalities=("obs",))
class TypedMLP(mmssl.Encoder):
    """A linear observation encoder."""

    modality = "obs"

    def __init__(self, in_dim: int = 4, dim: int = 8) -> None:
        super().__init__()
        self.dim = dim
        self.net = nn.Linear(in_dim, dim)

    def encode(self, x: torch.Tensor) -> mmssl.EncoderOutput:
        return mmssl.EncoderOutput(pooled=self.net(x))


@mmssl.register_objective("typed_align", modalities=("obs",))
class TypedAlign(mmssl.Objective):
    """Alignment of two augmented views."""

    def __init__(self, encoders: Mapping[str, mmssl.Encoder], modality: str | None = None,
                 augment: str | None = None) -> None:
        super().__init__(encoders, modality)
        self.augment = self.build_augment(augment)

    def forward(self, batch: mmssl.Batch, encoders: Mapping[str, mmssl.Encoder]) -> mmssl.ObjectiveOutput:
        x = self.inputs(batch)
        encoder = encoders[self.modality]
        loss = (encoder(self.augment(x)).pooled - encoder(self.augment(x)).pooled).pow(2).mean()
        return mmssl.ObjectiveOutput(loss, {"align": loss.item()})


@mmssl.register_intrinsic_reward("typed_constant")
class TypedConstant(IntrinsicReward):
    """One unit of bonus per step."""

    def step_bonus(self, obs: Obs, actions: torch.Tensor, next_obs: Obs, dones: torch.Tensor,
                   features: torch.Tensor | None) -> torch.Tensor:
        return torch.ones(len(dones))


@mmssl.register_dataset("typed_blobs", modalities=("obs",))
def typed_blobs(seed: int = 0, n: int = 64) -> DatasetSplits:
    """Gaussian vectors with two labels."""
    g = torch.Generator().manual_seed(seed)
    full = ArrayDataset({"obs": torch.randn(n, 4, generator=g)}, torch.arange(n) % 2, name="typed_blobs")
    train, test = split_dataset(full, 0.25, seed)
    return DatasetSplits(train, test)


# -- a script --------------------------------------------------------------------------------------
def script(run_dir: Path) -> None:
    assert_type(TypedMLP(dim=4), TypedMLP)  # register returns the class unchanged
    encoder = mmssl.build_encoder("typed_mlp", dim=8)
    assert_type(encoder, mmssl.Encoder)
    assert_type(mmssl.build_objective("typed_align", {"obs": encoder}), mmssl.Objective)
    assert_type(mmssl.build_dataset("typed_blobs", n=32), DatasetSplits)
    assert_type(mmssl.build_intrinsic_reward("typed_constant"), IntrinsicReward)
    assert_type(mmssl.compose("pretrain", ["objective=typed_align"]), DictConfig)
    summary = mmssl.pretrain({"objective": "typed_align", "trainer.steps": 5})
    assert_type(summary, dict[str, Any])
    run = mmssl.load_run(run_dir, device="cpu")
    assert_type(run, LoadedRun)
    z = run.embed("image", ["a.png", "b.png"], batch_size=64)
    t = run.embed("text", ["a seven", "a three"])
    assert_type(run.similarity(z, t), torch.Tensor)
    assert_type(run.classify("image", Path("digits/"), ["zero", "one"]), torch.Tensor)
    assert_type(mmssl.load_plugins(["my_pkg.ext"]), list[str])


# -- mistakes the types catch ------------------------------------------------------------------------
def mistakes(run_dir: Path, encoder: mmssl.Encoder) -> None:
    mmssl.load_run(42)  # type: ignore[arg-type]
    mmssl.finetune()  # type: ignore[call-arg]
    mmssl.OBJECTIVES.register("x", modalities="image")  # type: ignore[arg-type]  # a tuple: ("image",)
    mmssl.build_objective("simclr", [encoder])  # type: ignore[arg-type]  # {modality: encoder}
    mmssl.load_run(run_dir).embed("image", ["a.png"], batch_size="64")  # type: ignore[arg-type]
    mmssl.ObjectiveOutput(0.5)  # type: ignore[arg-type]  # the loss is a tensor
    name: str = mmssl.load_run(run_dir).step  # type: ignore[assignment]
    del name


class WrongEncoder(mmssl.Encoder):
    def encode(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]  # must return EncoderOutput
        return x


class WrongObjective(mmssl.Objective):
    def after_step(self, progress: float) -> None:  # type: ignore[override]  # (encoders, progress)
        pass
