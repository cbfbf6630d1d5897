"""Build encoders, objectives and data from a composed config (the only place config meets registries)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from omegaconf import DictConfig
from torch import nn

from mmssl.config import registry_kwargs
from mmssl.data.base import DatasetSplits
from mmssl.errors import ConfigError
from mmssl.plugins import load_plugins
from mmssl.registry import DATASETS, ENCODERS, OBJECTIVES
from mmssl.types import MODALITIES, Batch, ObjectiveOutput

#: keys of a data config that are not dataset-builder options (``cache``/``on_error`` reach builders that take them)
DATA_LOADER_KEYS = ("name", "batch_size", "augment", "num_workers", "cache", "on_error")
#: keys of an objective config that the trainer, not the objective, reads
OBJECTIVE_RUN_KEYS = ("name", "weight")


def build_encoders(spec: Mapping) -> nn.ModuleDict:
    """``{modality: {name, **options}}`` → ``ModuleDict`` of encoders keyed by modality."""
    encoders = {}
    for modality, node in spec.items():
        if modality not in MODALITIES:
            raise ConfigError(f"encoder key {modality!r} is not a modality; use one of {list(MODALITIES)}")
        if "name" not in node:
            raise ConfigError(f"encoder.{modality} needs a 'name' (one of the registered encoders; `mmssl list encoders`)")
        encoder = ENCODERS.build(node["name"], **registry_kwargs(node))
        if encoder.modality != modality and not (modality == "obs"):
            raise ConfigError(f"encoder {node['name']!r} reads {encoder.modality!r}, not {modality!r}; "
                              f"put it under encoder.{encoder.modality}")
        encoders[modality] = encoder
    if not encoders:
        raise ConfigError("no encoder configured; pick one with encoder=<name> (`mmssl list encoders`)")
    return nn.ModuleDict(encoders)


class SSLModel(nn.Module):
    """Encoders (by modality) plus weighted objectives (by slot name); ``forward`` sums the weighted losses."""

    def __init__(self, encoders: nn.ModuleDict, objectives: Mapping[str, nn.Module], weights: Mapping[str, float]):
        super().__init__()
        self.encoders = encoders
        self.objectives = nn.ModuleDict(dict(objectives))
        self.weights = dict(weights)

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, ObjectiveOutput]]:
        outputs = {slot: objective(batch, self.encoders) for slot, objective in self.objectives.items()}
        total = sum(self.weights[slot] * out.loss for slot, out in outputs.items())
        return total, outputs

    def after_step(self, progress: float) -> None:
        for objective in self.objectives.values():
            objective.after_step(self.encoders, progress)


def build_model(cfg: DictConfig) -> SSLModel:
    load_plugins(cfg.get("plugins") or [])  # a stored run's plugins: eval, finetune and export rebuild with them
    encoders = build_encoders(cfg.encoder)
    objectives, weights = {}, {}
    if not cfg.objective:
        raise ConfigError("no objective configured; pick one with objective=<name> (`mmssl list objectives`)")
    for slot, node in cfg.objective.items():
        if not isinstance(node, Mapping) or "name" not in node:
            raise ConfigError(f"objective.{slot} needs a 'name' (`mmssl list objectives`)")
        objectives[slot] = OBJECTIVES.build(node["name"], encoders, **registry_kwargs(node, OBJECTIVE_RUN_KEYS))
        weights[slot] = float(node.get("weight", 1.0))
    return SSLModel(encoders, objectives, weights)


def build_data(cfg: DictConfig) -> DatasetSplits:
    load_plugins(cfg.get("plugins") or [])
    node = cfg.data
    if "name" not in node:
        raise ConfigError("data needs a 'name' (`mmssl list datasets`)")
    if node.get("cache") not in (None, "memory", "none"):
        raise ConfigError(f"data.cache must be memory or none, got {node.get('cache')!r}")
    if node.get("on_error") not in (None, "skip", "stop"):
        raise ConfigError(f"data.on_error must be skip or stop, got {node.get('on_error')!r}")
    kwargs = registry_kwargs(node, DATA_LOADER_KEYS)
    params = _params(node["name"])
    if "seed" in params:
        kwargs.setdefault("seed", int(cfg.seed))
    image_encoder = (cfg.get("encoder") or {}).get("image") or {}
    if "channels" in params and kwargs.get("channels") is None and "channels" in kwargs:
        # channels: null reads images the way the image encoder expects them (grey for the default convnet)
        kwargs["channels"] = int(image_encoder.get("in_channels") or 3)
    # file datasets choose memory or lazy reading; built-in sets are in memory whatever data.cache says
    for key in ("cache", "on_error"):
        if node.get(key) is not None and key in params:
            kwargs[key] = node[key]
    return DATASETS.build(node["name"], **kwargs)


def _params(name: str) -> list[str]:
    return [p.name for p in DATASETS.parameters(name)]
