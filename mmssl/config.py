"""Hydra config composition with errors a person can act on.

``compose("pretrain", ["objective=byol", "trainer.steps=100"])`` returns the resolved config; a bad
override (unknown key, unknown group option, unparsable value) raises ``ConfigError`` naming it and
suggesting the closest valid keys. The CLI uses the compose API rather than ``@hydra.main`` so that
run folders, logging and errors stay under mmssl's control.
"""

from __future__ import annotations

import difflib
import os
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
    """Compose ``configs/<name>.yaml`` with Hydra overrides; errors become one-line ``ConfigError``s."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        try:
            cfg = hydra_compose(config_name=name, overrides=list(overrides))
        except (HydraException, OmegaConfBaseException) as exc:
            raise ConfigError(_explain(exc, name, overrides)) from None
    OmegaConf.resolve(cfg)
    return cfg


def _explain(exc: Exception, name: str, overrides) -> str:
    text = " ".join(str(exc).split())
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key and f"'{key}'" in text or key.split(".")[-1] in text:
            base = compose_keys(name)
            close = difflib.get_close_matches(key, base, n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            if "Could not find" in text or "Could not load" in text:
                group = key
                options = _group_options(group)
                hint = f"; options for {group}: {', '.join(options)}" if options else hint
                return f"bad override {override!r}: no such config option{hint}"
            return f"bad override {override!r}: {text.split('full_key:')[0].strip()[:160]}{hint}"
    return f"config error: {text[:240]}"


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
