"""Hydra config composition with errors a person can act on.

``compose("pretrain", ["objective=byol", "trainer.steps=100"])`` returns the resolved config; a bad
override (unknown key, unknown group option, unparsable value) raises ``ConfigError`` naming it and
suggesting the closest valid keys. The CLI uses the compose API rather than ``@hydra.main`` so that
run folders, logging and errors stay under mmssl's control.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from mmssl.errors import ConfigError


def config_dir() -> Path:
    """``$MMSSL_CONFIG_DIR`` or the repository's ``configs/`` next to the package."""
    env = os.environ.get("MMSSL_CONFIG_DIR")
    path = Path(env) if env else Path(__file__).resolve().parents[1] / "configs"
    if not path.is_dir():
        raise ConfigError(f"config directory {path} not found; install mmssl from a checkout (pip install -e .) "
                          "or set MMSSL_CONFIG_DIR")
    return path


def compose(name: str, overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """Compose ``configs/<name>.yaml`` with Hydra overrides; errors become one-line ``ConfigError``s.

    Besides Hydra's own checks (unknown keys, unknown group options, syntax), an override must keep the
    type of the default it replaces (``trainer.steps=abc`` fails here, not deep inside the trainer).
    """
    overrides = list(overrides)
    cfg = _compose(name, overrides)
    groups = [o for o in overrides if _is_group_override(o)]
    base = _compose(name, groups) if len(groups) < len(overrides) else cfg
    for override in overrides:
        if override in groups or "=" not in override or override.startswith(("+", "~")):
            continue
        key = override.split("=", 1)[0]
        default = OmegaConf.select(base, key, default=None)
        value = OmegaConf.select(cfg, key, default=None)
        if isinstance(default, bool | int | float) and value is not None and not _same_kind(default, value):
            raise ConfigError(f"bad override {override!r}: {key} must be {type(default).__name__} "
                              f"(default {default!r}), got {value!r}")
    # missing keys first: resolving an interpolation that reads a ??? key would fail less clearly
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"config key(s) {', '.join(missing)} must be set (??? in the defaults); "
                          f"pass {missing[0]}=<value>")
    OmegaConf.resolve(cfg)
    return cfg


def _native_sample_rate(path, fallback=16000) -> int:
    from mmssl.data.audio import folder_sample_rate  # lazily: config sits below data

    return folder_sample_rate(path, fallback)


# `${native_sample_rate:${.root},16000}` in data configs: the audio files' own rate when they all agree
OmegaConf.register_new_resolver("native_sample_rate", _native_sample_rate, replace=True)


def _same_kind(default, value) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_group_override(override: str) -> bool:
    key = override.split("=", 1)[0].lstrip("+~")
    return (config_dir() / key.replace(".", "/")).is_dir()


def _compose(name: str, overrides: list[str]) -> DictConfig:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        try:
            return hydra_compose(config_name=name, overrides=overrides)
        except (HydraException, OmegaConfBaseException, TypeError, ValueError) as exc:
            raise ConfigError(_explain(exc, name)) from None


def _explain(exc: Exception, name: str) -> str:
    text = " ".join(str(exc).split())
    if m := re.search(r"Could not override '([^']+)'", text):
        key = m.group(1)
        keys = compose_keys(name)
        if key in keys:  # the key exists; Hydra refused the value (e.g. a dict where the default is not one)
            return f"cannot override config key {key!r} with that value; set the whole node ({key}={{a: 1}}) or use +{key}=…"
        close = difflib.get_close_matches(key, keys, n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        return f"unknown config key {key!r}; {hint}(use +{key}=… to add a new key)"
    if m := re.search(r"Could not find '([^']+)/([^']+)'", text):
        group, option = m.groups()
        options = _group_options(group)
        close = difflib.get_close_matches(option, options, n=2)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        return f"unknown {group} {option!r}; {hint}options: {', '.join(options)}"
    if m := re.search(r"Error parsing override '([^']+)'", text):
        return f"cannot parse override {m.group(1)!r}; write key=value (Hydra override syntax)"
    return f"config error: {text.split(' See https')[0][:240]}"


def compose_keys(name: str) -> list[str]:
    """Every dotted key of the default config (for suggestions)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = hydra_compose(config_name=name)
    keys: list[str] = []

    def walk(node, prefix):
        for k, v in node.items():
            full = f"{prefix}{k}"
            keys.append(full)
            if isinstance(v, DictConfig):
                walk(v, full + ".")

    walk(cfg, "")
    return keys


def _group_options(group: str) -> list[str]:
    d = config_dir() / group.replace(".", "/")
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def to_container(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def registry_kwargs(node: DictConfig | dict, drop: tuple[str, ...] = ("name",)) -> dict:
    """A config node as keyword arguments for ``Registry.build`` (without ``name`` and listed keys)."""
    data = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    return {k: v for k, v in data.items() if k not in drop}
