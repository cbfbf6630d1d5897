"""The config of `mmssl finetune`: the pretraining run's config with a ``finetune`` node."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from mmssl.config import RENAMED_KEYS, apply_overrides, compose, stored_config
from mmssl.errors import ConfigError

MODES = ("frozen", "partial", "full", "semi")
#: data keys that say how audio is read; a transfer inherits them from the pretraining run
AUDIO_READ_KEYS = ("sample_rate", "clip_seconds")
#: finetune keys that may differ on ``resume=true`` (how the run is shown or saved, never what it trains)
RESUME_SAFE_KEYS = tuple(f"finetune.{k}" for k in ("resume", "resume_override", "progress", "checkpoint_every",
                                                   "keep_checkpoints", "threads", "device"))


def make_config(run_config: Mapping, overrides: list[str], source: str | Path = "the run") -> DictConfig:
    """The run's config with ``finetune`` = configs/finetune.yaml composed with the overrides that belong to it.

    ``data=<name>`` (and ``data.*`` alongside it) replaces the run's data, read at the run's audio
    ``sample_rate``/``clip_seconds`` unless those are given; other overrides of keys that are
    not fine-tuning keys (``data.batch_size``, ``logger.mode``) edit the run's config, with type checks.
    """
    ft_keys = set(compose("finetune")) | {"data"}
    swap_data = any(o.split("=", 1)[0].lstrip("+~") == "data" for o in overrides)
    mine, theirs = [], []
    for o in overrides:
        top = o.split("=", 1)[0].lstrip("+~").split(".")[0]
        (mine if top in ft_keys and (top != "data" or swap_data) else theirs).append(o)
    ft = compose("finetune", mine)
    cfg = stored_config(run_config, source)  # inert data: no resolvers, downloads or init weights
    # the run folder's logger settings are not acted on (no upload because a folder says so): defaults + overrides
    cfg.logger = compose("pretrain").logger
    apply_overrides(cfg, theirs, known=list(compose("finetune")),
                    where="configs/finetune.yaml or the run's config.yaml")
    if swap_data:
        # audio is read at the pretraining run's rate and clip length unless the overrides say otherwise,
        # so a folder of recordings (any rate) reaches the encoder resampled to what it learned from
        given = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
        for key in AUDIO_READ_KEYS:
            if key in ft.data and key in cfg.data and f"data.{key}" not in given:
                ft.data[key] = cfg.data[key]
        cfg.data = ft.data
    ft = OmegaConf.masked_copy(ft, [k for k in ft if k != "data"])
    cfg.finetune = ft
    if "amp" in ft:  # a fine-tune folder of an older version
        raise ConfigError(f"finetune.amp was replaced by {RENAMED_KEYS['amp']}; rename the key")
    if ft.mode not in MODES:
        raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {ft.mode!r}")
    return cfg


def default_name(cfg: DictConfig) -> str:
    ft = cfg.finetune
    kind = "scratch" if ft.from_scratch else ft.mode
    semi = "-semi" if ft.semi and ft.mode != "semi" else ""
    return f"{kind}{semi}-labels{ft.labels}-{cfg.data.name}-seed{ft.seed}"


def loop_settings(ft: DictConfig) -> DictConfig:
    """The ``finetune`` keys as the trainer's loop settings (the ``trainer`` keys of pretraining)."""
    keys = ("steps", "warmup_steps", "final_lr_fraction", "precision", "grad_clip", "nonfinite", "checkpoint_every",
            "keep_checkpoints", "progress")
    # metrics are logged where validation runs; the pretraining evaluation (eval_every) is not a fine-tune's
    return OmegaConf.create({k: ft[k] for k in keys} | {"log_every": ft.eval_every, "eval_every": 0})
