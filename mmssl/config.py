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
    type of the default it replaces (``trainer.steps=abc`` fails here, not deep inside the trainer), and
    every numeric key must lie in its range (``mmssl.constraints``): all before anything is written.
    """
    overrides = list(overrides)
    for override in overrides:
        _check_syntax(override)
    cfg = _compose(name, overrides)
    groups = [o for o in overrides if _is_group_override(o)]
    base = _compose(name, groups) if len(groups) < len(overrides) else cfg
    seen = set()
    for override in reversed(overrides):  # the last override of a key is the one that counts (and is quoted)
        if override in groups or "=" not in override or override.startswith(("+", "~")):
            continue
        key = override.split("=", 1)[0]
        if key in seen:
            continue
        seen.add(key)
        default = OmegaConf.select(base, key, default=None)
        value = OmegaConf.select(cfg, key, default=None)
        if isinstance(default, bool | int | float) and value is not None and not _same_kind(default, value):
            raise ConfigError(f"bad override {override!r}: {key} must be {type(default).__name__} "
                              f"(default {default!r}), got {value!r}")
    try:
        OmegaConf.resolve(cfg)
    except Exception as exc:  # noqa: BLE001 - a bad interpolation in an override or a config file
        raise ConfigError(f"config error: cannot resolve an interpolation ({' '.join(str(exc).split())[:200]})") from None
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"config key(s) {', '.join(missing)} must be set (??? in the defaults); "
                          f"pass {missing[0]}=<value>")
    from mmssl import constraints

    constraints.check(OmegaConf.to_container(cfg), overrides, OmegaConf.to_container(base, resolve=True))
    if "logger" in cfg and isinstance(cfg.logger, DictConfig) and "mode" in cfg.logger:
        from mmssl.logging import RunLogger

        RunLogger._resolve_mode(cfg.logger.mode)  # logger.mode or $WANDB_MODE: checked before any folder exists
    return cfg


def _check_syntax(override: str) -> None:
    """One override that Hydra cannot lex → an error quoting it, with the quoted form that would parse."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        OverridesParser.create().parse_overrides([override])
    except HydraException:
        key, _, value = override.partition("=")
        quote = '"' if "'" in value else "'"
        if not value:
            hint = "; write key=value (Hydra override syntax)"
        elif not value.isprintable():
            hint = "; the value holds control characters (a pasted newline or tab?): remove them"
        else:
            hint = (f"; quote the value: {key}={quote}{value}{quote} (in a shell, wrap the whole argument in the "
                    "other kind of quotes)")
        raise ConfigError(f"cannot parse override {override!r}: {value!r} is not Hydra override syntax{hint}") from None


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
            raise ConfigError(_explain(exc, name, overrides)) from None


def _explain(exc: Exception, name: str, overrides: list[str] = ()) -> str:
    text = " ".join(str(exc).split())
    if m := re.search(r"Could not override '([^']+)'", text):
        key = m.group(1)
        # the keys of the config as the user chose it (encoder=resnet18 has no encoder.image.width)
        groups = [o for o in overrides if _is_group_override(o)]
        try:
            keys = compose_keys(name, groups)
        except Exception:  # noqa: BLE001 - a broken group override is reported by its own error
            keys = compose_keys(name)
        if key in keys:  # the key exists; Hydra refused the value (e.g. a dict where the default is not one)
            return f"cannot override config key {key!r} with that value; set the whole node ({key}={{a: 1}}) or use +{key}=…"
        close = difflib.get_close_matches(key, keys, n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        choice = next((o for o in reversed(groups) if key.startswith(o.split("=", 1)[0].lstrip("+~") + ".")), None)
        if choice is not None:
            group = choice.split("=", 1)[0].lstrip("+~")
            options = [k.removeprefix(group + ".") for k in keys  # its keys, two levels down
                       if k.startswith(group + ".") and k.count(".") - group.count(".") == 2]
            return (f"unknown config key {key!r} for {choice}; {hint}{choice} has: {', '.join(options[:16])}"
                    f"{' …' if len(options) > 16 else ''} (use +{key}=… to add a new key)")
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


def compose_keys(name: str, overrides: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Every dotted key of the default config, or of the one ``overrides`` (group choices) give (for suggestions)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = hydra_compose(config_name=name, overrides=list(overrides))
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


#: options that make a builder fetch or read something beyond the model: never followed from a stored config
#: (its checkpoint holds the weights; a download or an init-weights path there is not the user's request)
NOT_FROM_STORED = {"download": False, "weights": None, "pretrained": None}


def stored_config(config, source: str | Path) -> DictConfig:
    """A config read back from a run folder or checkpoint, as inert data for rebuilding models.

    Stored configs are written fully resolved (``to_container``), so an interpolation (``${oc.env:…}``,
    ``${now:…}`` or any resolver) can only be there because someone edited the folder: it is refused,
    never resolved, so a crafted folder cannot copy environment variables into new files or to wandb.
    ``download`` flags and init-weight paths (``weights``, ``pretrained``) are switched off.
    """
    if not isinstance(config, dict):
        raise ConfigError(f"{source} holds no config mapping; is it a run folder of `mmssl pretrain`?")

    def inert(node, path):
        if isinstance(node, dict):
            return {str(k): (NOT_FROM_STORED[k] if k in NOT_FROM_STORED and v not in (None, False) else inert(v, f"{path}{k}."))
                    for k, v in node.items()}
        if isinstance(node, list | tuple):
            return [inert(v, path) for v in node]
        if isinstance(node, str) and "${" in node:
            raise ConfigError(f"the config stored in {source} holds an interpolation at {path[:-1] or 'top level'} "
                              f"({node[:60]!r}); mmssl stores resolved configs, so the folder was edited: refusing to "
                              "resolve it (restore the run's own config)")
        return node

    return OmegaConf.create(inert(config, ""))
