"""Plugins from user code: config key and entry points; registered names selectable without a YAML file."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch

from mmssl import plugins
from mmssl.build import build_data, build_model
from mmssl.config import compose
from mmssl.errors import ConfigError

PLUGIN = '''
import torch
from torch import nn

import mmssl
from mmssl.types import EncoderOutput


@mmssl.register_encoder("{prefix}_flat", modalities=("image",))
class Flat(mmssl.Encoder):
    """Flatten + linear: a plugin encoder."""

    modality = "image"

    def __init__(self, in_dim: int = 64, dim: int = 16):
        super().__init__()
        self.dim = dim
        self.fc = nn.Linear(in_dim, dim)

    def encode(self, x):
        return EncoderOutput(pooled=self.fc(x.flatten(1)))


@mmssl.register_objective("{prefix}_mse", modalities=("image",))
class Mse(mmssl.Objective):
    """Embeddings of two noisy copies agree: a plugin objective."""

    def __init__(self, encoders, modality: str | None = None, noise: float = 0.1):
        super().__init__(encoders, modality)
        self.noise = noise

    def forward(self, batch, encoders):
        x = self.inputs(batch)
        z1, z2 = (encoders[self.modality](x + self.noise * torch.randn_like(x)).pooled for _ in range(2))
        return mmssl.ObjectiveOutput((z1 - z2).pow(2).mean(), {{}})
'''


@pytest.fixture
def plugin_module(tmp_path, monkeypatch, request):
    prefix = request.node.name.removeprefix("test_")[:20]
    name = f"user_plugin_{prefix}"
    (tmp_path / f"{name}.py").write_text(PLUGIN.format(prefix=prefix))
    monkeypatch.syspath_prepend(str(tmp_path))
    return name, prefix


def test_plugin_objective_and_encoder_selected_by_name(plugin_module):
    name, prefix = plugin_module
    cfg = compose("pretrain", [f"plugins=[{name}]", f"objective={prefix}_mse", f"objective.{prefix}_mse.noise=0.2",
                               f"encoder.image={prefix}_flat", "encoder.image.dim=8"])
    assert cfg.objective[f"{prefix}_mse"] == {"name": f"{prefix}_mse", "weight": 1.0, "modality": None, "noise": 0.2}
    assert dict(cfg.encoder.image) == {"name": f"{prefix}_flat", "in_dim": 64, "dim": 8}
    model = build_model(cfg)
    assert model.encoders["image"].dim == 8
    batch = build_data(cfg).train.batch(torch.arange(4))
    assert torch.isfinite(model(batch)[0])


def test_plugin_keys_are_checked_like_builtins(plugin_module):
    name, prefix = plugin_module
    with pytest.raises(ConfigError, match=r"unknown config key .objective\.\w+_mse\.nosie"):
        compose("pretrain", [f"plugins=[{name}]", f"objective={prefix}_mse", f"objective.{prefix}_mse.nosie=0.2"])
    with pytest.raises(ConfigError, match="must be float"):
        compose("pretrain", [f"plugins=[{name}]", f"objective={prefix}_mse", f"objective.{prefix}_mse.noise=abc"])
    with pytest.raises(ConfigError, match="has no option 'width'"):
        compose("pretrain", [f"plugins=[{name}]", f"encoder.image={prefix}_flat", "encoder.image.width=3"])


def test_unknown_or_bad_plugins_are_one_line():
    with pytest.raises(ConfigError, match="'no_such_plugin_mod' cannot be imported"):
        compose("pretrain", ["plugins=[no_such_plugin_mod]"])
    with pytest.raises(ConfigError, match="is not a module name"):
        plugins.load_plugins(["../evil.py"])


def test_plugin_that_raises_is_named(tmp_path, monkeypatch):
    (tmp_path / "broken_plugin_mod.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match="'broken_plugin_mod' failed while importing: RuntimeError: boom"):
        plugins.load_plugins(["broken_plugin_mod"])


def test_entry_point_plugins_load_once(tmp_path, monkeypatch):
    (tmp_path / "ep_plugin_mod.py").write_text("import mmssl\nLOADS = getattr(mmssl, '_ep_loads', 0) + 1\n"
                                               "mmssl._ep_loads = LOADS\n")
    dist = tmp_path / "ep_plugin_dist-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-plugin-dist\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(textwrap.dedent("""\
        [mmssl.plugins]
        ep = ep_plugin_mod
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(plugins, "_entry_points_loaded", False)
    plugins.load_entry_points()
    plugins.load_entry_points()
    assert sys.modules["ep_plugin_mod"].LOADS == 1
    assert plugins.loaded()["ep_plugin_mod"] == "entry point ep"
