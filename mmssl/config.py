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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mmssl.errors import ConfigError
from mmssl.plugins import load_plugins

#: config groups whose options are registry entries: a registered name without a YAML file is still an option
REGISTRY_GROUPS = {"objective": "objectives", "data": "datasets", "intrinsic": "intrinsic_rewards",
                   "agent_encoder": "encoders"}

_extra_dirs: list[Path] = []


def config_dir() -> Path:
    """The packaged configs: ``mmssl/configs`` in an installed wheel, the checkout's ``configs/`` otherwise."""
    package = Path(__file__).resolve().parent
    for path in (package / "configs", package.parent / "configs"):
        if (path / "pretrain.yaml").is_file():
            return path
    raise ConfigError(f"mmssl's configs are missing (looked in {package / 'configs'}); reinstall mmssl")


def add_config_dir(path: str | Path) -> None:
    """Put a user config folder in front of the packaged configs (``--config-dir DIR``): its files add options
    to any group and replace packaged files of the same name."""
    path = Path(path).expanduser().resolve()
    if not path.is_dir():
        raise ConfigError(f"config folder {path} does not exist; pass --config-dir <an existing folder>")
    if path not in _extra_dirs:
        _extra_dirs.append(path)


def search_dirs() -> list[Path]:
    """Config folders in lookup order: ``--config-dir`` folders, ``$MMSSL_CONFIG_DIR`` (``os.pathsep``-separated),
    then the packaged configs. The first folder holding a file wins."""
    env = [Path(p).expanduser().resolve() for p in os.environ.get("MMSSL_CONFIG_DIR", "").split(os.pathsep) if p]
    for path in env:
        if not path.is_dir():
            raise ConfigError(f"MMSSL_CONFIG_DIR names {path}, which is not a folder; fix or unset it")
    dirs = [*_extra_dirs, *env, config_dir()]
    return list(dict.fromkeys(dirs))


@contextmanager
def hydra_context() -> Iterator[Any]:
    """Hydra initialised on :func:`search_dirs` (plus registry entries without a YAML file, as structured configs)."""
    from hydra._internal.config_search_path_impl import ConfigSearchPathImpl
    from hydra._internal.hydra import Hydra
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.plugins import Plugins

    Plugins.instance()  # registers Hydra's config sources (file://, pkg://, structured://)
    store_registry_configs()
    search_path = ConfigSearchPathImpl()
    search_path.append("hydra", "pkg://hydra.conf")
    for path in search_dirs():
        search_path.append("mmssl", f"file://{path}")
    search_path.append("schema", "structured://")
    GlobalHydra.instance().clear()
    Hydra.create_main_hydra2("mmssl", search_path)
    try:
        yield GlobalHydra.instance().hydra
    finally:
        GlobalHydra.instance().clear()


def store_registry_configs() -> None:
    """Make every registry entry an option of its config group, with its constructor defaults as the config.

    A plugin's ``@OBJECTIVES.register("my_objective")`` is then selectable as ``objective=my_objective`` and
    its keys overridable one by one (``objective.my_objective.temperature=0.3``) with the usual checks.
    Groups whose YAML file exists keep the file.
    """
    from hydra.core.config_store import ConfigStore

    from mmssl.registry import REGISTRIES

    store = ConfigStore.instance()
    for group, kind in REGISTRY_GROUPS.items():
        on_disk = set(group_options(group, include_registry=False))
        for entry in REGISTRIES[kind]:
            if entry.name in on_disk:
                continue
            node = {"name": entry.name, **constructor_defaults(entry.obj)}
            if group == "objective":
                node = {entry.name: {"name": entry.name, "weight": 1.0, **node}}
            elif group == "data":
                node = {"batch_size": 256, "augment": {}, **node}
            store.store(group=group, name=entry.name, node=node, provider="mmssl registry")


def constructor_defaults(obj: Callable[..., Any]) -> dict[str, Any]:
    """The keyword defaults of a registered class or factory that a config can hold (plain data only)."""
    from mmssl.registry import parameters

    out = {}
    for p in parameters(obj):
        if p.kind not in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) or p.default is p.empty:
            continue
        if _plain(p.default):
            out[p.name] = list(p.default) if isinstance(p.default, tuple) else p.default
    return out


def _plain(value: object) -> bool:
    if value is None or isinstance(value, bool | int | float | str):
        return True
    if isinstance(value, list | tuple):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


def _plugin_overrides(overrides: list[str]) -> list[str]:
    """Module names from ``plugins=[a,b]`` / ``+plugins=…`` overrides (imported before composing)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    names: list[str] = []
    for override in overrides:
        if override.lstrip("+~").split("=", 1)[0] != "plugins" or "=" not in override:
            continue
        try:
            value = OverridesParser.create().parse_override(override).value()
        except Exception:
            raise ConfigError(f"cannot parse override {override!r}; write plugins=[my_pkg.mmssl_ext,other]") from None
        if isinstance(value, str):
            names.append(value)
        elif isinstance(value, list):
            names.extend(str(v) for v in value)
        elif value is not None:
            raise ConfigError(f"bad override {override!r}: plugins is a list of module names, "
                              "e.g. plugins=[my_pkg.mmssl_ext,other]")
    return names


#: keys of earlier versions → what replaced them (an override of the old key says so instead of "unknown key")
RENAMED_KEYS = {
    "trainer.amp": "trainer.precision (auto | fp32 | bf16 | fp16; amp=bf16 → precision=bf16, amp=off → precision=fp32)",
    "amp": "precision (auto | fp32 | bf16 | fp16; amp=bf16 → precision=bf16, amp=off → precision=fp32)",
}


def compose(name: str, overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """Compose ``configs/<name>.yaml`` with Hydra overrides; errors become one-line ``ConfigError``s.

    Besides Hydra's own checks (unknown keys, unknown group options, syntax), an override must keep the
    type of the default it replaces (``trainer.steps=abc`` fails here, not deep inside the trainer), and
    every numeric key must lie in its range (``mmssl.constraints``): all before anything is written.
    """
    overrides = list(overrides)
    load_plugins(_plugin_overrides(overrides))
    for override in overrides:
        _check_syntax(override)
        _check_renamed(override)
    overrides, encoder_choices = _split_encoder_choices(overrides)
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
    # missing keys first: resolving an interpolation that reads a ??? key would fail less clearly
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"config key(s) {', '.join(missing)} must be set (??? in the defaults); "
                          f"pass {missing[0]}=<value>")
    try:
        OmegaConf.resolve(cfg)
    except Exception as exc:  # noqa: BLE001 - a bad interpolation in an override or a config file
        raise ConfigError(f"config error: cannot resolve an interpolation ({' '.join(str(exc).split())[:200]})") from None
    load_plugins(cfg.get("plugins") or [])
    _apply_encoder_choices(cfg, encoder_choices)
    from mmssl import constraints

    constraints.check(to_container(cfg), overrides, to_container(base))
    if "logger" in cfg and isinstance(cfg.logger, DictConfig) and "mode" in cfg.logger:
        from mmssl.logging import RunLogger

        RunLogger._resolve_mode(cfg.logger.mode)  # logger.mode or $WANDB_MODE: checked before any folder exists
    return cfg


def _check_renamed(override: str) -> None:
    """A one-line error for an override of a key that was renamed (``+key=…`` adds a new key: allowed)."""
    key = override.split("=", 1)[0].lstrip("~")
    if key in RENAMED_KEYS:
        raise ConfigError(f"{key} was replaced by {RENAMED_KEYS[key]}; rename it in {override!r}")


def _split_encoder_choices(overrides: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Take out ``encoder.<modality>=<registered encoder>`` and the ``encoder.<modality>.<key>=…`` after it.

    Hydra would merge a new encoder's options into the old one's (or store the bare name); instead the node
    is replaced by the chosen encoder's constructor defaults, then its own keys are overridden.
    """
    from mmssl.registry import ENCODERS
    from mmssl.types import MODALITIES

    chosen: dict[str, list[str]] = {}
    rest = []
    for override in overrides:
        key, _, value = override.partition("=")
        parts = key.split(".")
        if len(parts) == 2 and parts[0] == "encoder" and parts[1] in MODALITIES and value in ENCODERS:
            chosen[parts[1]] = [value]
        elif len(parts) >= 3 and parts[0] == "encoder" and parts[1] in chosen:
            chosen[parts[1]].append(override)
        else:
            rest.append(override)
    return rest, chosen


def _apply_encoder_choices(cfg: DictConfig, chosen: dict[str, list[str]]) -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from mmssl.registry import ENCODERS

    for modality, (name, *sub) in chosen.items():
        node = {"name": name, **constructor_defaults(ENCODERS.get(name).obj)}
        for override in sub:
            key = override.split("=", 1)[0].split(".", 2)[2]
            if key.split(".")[0] not in node:
                close = difflib.get_close_matches(key, list(node), n=2)
                hint = f"did you mean {', '.join(close)}? " if close else ""
                raise ConfigError(f"encoder {name!r} has no option {key!r} (in {override!r}); {hint}"
                                  f"options: {', '.join(k for k in node if k != 'name')}")
            try:
                value = OverridesParser.create().parse_override(override).value()
            except Exception:
                raise ConfigError(f"cannot parse override {override!r}; write key=value (Hydra override syntax)") from None
            node[key] = value
        OmegaConf.update(cfg, f"encoder.{modality}", node, merge=False)


def _native_sample_rate(path: str, fallback: int = 16000) -> int:
    from mmssl.data.manifest import folder_sample_rate  # lazily: the data package loads on first use

    return folder_sample_rate(path, fallback)


# `${native_sample_rate:${.root},16000}` in data configs: the audio files' own rate when they all agree
OmegaConf.register_new_resolver("native_sample_rate", _native_sample_rate, replace=True)


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


def config_keys(node: Any, prefix: str = "") -> list[str]:
    """Every dotted key of a config (groups and leaves), for "did you mean" hints."""
    out: list[str] = []
    for k, v in node.items():
        out.append(f"{prefix}{k}")
        if isinstance(v, DictConfig | dict):
            out += config_keys(v, f"{prefix}{k}.")
    return out


def apply_overrides(cfg: DictConfig, overrides: list[str], known: list[str] | tuple[str, ...] = (),
                    where: str = "the config") -> None:
    """Edit ``cfg`` (a composed or stored config) in place with ``key=value`` overrides, read by Hydra's
    override grammar as on any command line; the key must exist (``+``: may be new) and keep the type of
    the value it replaces. ``known``: more key names for the "did you mean" hint; ``where``: where the keys
    are listed, for the messages."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for text in overrides:
        _check_syntax(text)
        override = parser.parse_override(text)
        key = override.key_or_group
        current = OmegaConf.select(cfg, key, default=_UNSET)
        if override.is_delete() or (current is _UNSET and not override.is_add()):
            _check_renamed(text)
            close = difflib.get_close_matches(key, config_keys(cfg) + list(known), n=3, cutoff=0.6)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            verb = "cannot delete" if override.is_delete() else "unknown config key"
            raise ConfigError(f"{verb} {key!r}; {hint}(keys: {where})")
        value = override.value()
        if isinstance(current, bool | int | float) and not _same_kind(current, value):
            raise ConfigError(f"bad override {text!r}: {key} must be {type(current).__name__} (current value {current!r})")
        OmegaConf.update(cfg, key, value, merge=False)


_UNSET = object()


def _same_kind(default: object, value: object) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_group_override(override: str) -> bool:
    key = override.split("=", 1)[0].lstrip("+~")
    return any((d / key.replace(".", "/")).is_dir() for d in search_dirs()) or key in REGISTRY_GROUPS


def _compose(name: str, overrides: list[str]) -> DictConfig:
    from hydra import compose as hydra_compose
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    with hydra_context():
        try:
            return hydra_compose(config_name=name, overrides=overrides)
        except (HydraException, OmegaConfBaseException, TypeError, ValueError) as exc:
            raise ConfigError(_explain(exc, name, overrides)) from None


def _explain(exc: Exception, name: str, overrides: Sequence[str] = ()) -> str:
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
        options = group_options(group)
        close = difflib.get_close_matches(option, options, n=2)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        return f"unknown {group} {option!r}; {hint}options: {', '.join(options)}"
    if m := re.search(r"Error parsing override '([^']+)'", text):
        return f"cannot parse override {m.group(1)!r}; write key=value (Hydra override syntax)"
    return f"config error: {text.split(' See https')[0][:240]}"


def compose_keys(name: str, overrides: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Every dotted key of the default config, or of the one ``overrides`` (group choices) give (for suggestions)."""
    from hydra import compose as hydra_compose

    with hydra_context():
        cfg = hydra_compose(config_name=name, overrides=list(overrides))
    keys: list[str] = []

    def walk(node: DictConfig, prefix: str) -> None:
        for k, v in node.items():
            full = prefix + str(k)
            keys.append(full)
            if isinstance(v, DictConfig):
                walk(v, full + ".")

    walk(cfg, "")
    return keys


def group_options(group: str, include_registry: bool = True) -> list[str]:
    """Options of a config group: YAML files in every config folder, plus registry entries for registry groups."""
    names = {p.stem for d in search_dirs() for p in (d / group.replace(".", "/")).glob("*.yaml")}
    if include_registry and group in REGISTRY_GROUPS:
        from mmssl.registry import REGISTRIES

        names |= set(REGISTRIES[REGISTRY_GROUPS[group]].names())
    return sorted(names)


def config_groups(name: str) -> dict[str, list[str]]:
    """``{group: options}`` of the groups in the primary config ``name``'s defaults list (for ``--help``)."""
    import yaml

    primary = next((d / f"{name}.yaml" for d in search_dirs() if (d / f"{name}.yaml").is_file()), None)
    defaults = (yaml.safe_load(primary.read_text()) or {}).get("defaults", []) if primary else []
    groups = [next(iter(item)).split("@")[0].removeprefix("optional ").strip()
              for item in defaults if isinstance(item, dict)]
    return {g: group_options(g) for g in groups}


def to_container(cfg: DictConfig) -> dict[str, Any]:
    """``cfg`` as plain, resolved data (what run folders store)."""
    data = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(data, dict)  # a DictConfig's container is a dict (only a ListConfig's is a list)
    return data  # type: ignore[return-value]  # OmegaConf types keys as DictKeyType (str, int, Enum, …)


def registry_kwargs(node: DictConfig | dict[str, Any], drop: tuple[str, ...] = ("name",)) -> dict[str, Any]:
    """A config node as keyword arguments for ``Registry.build`` (without ``name`` and listed keys)."""
    data = to_container(node) if isinstance(node, DictConfig) else dict(node)
    return {k: v for k, v in data.items() if k not in drop}


#: options that make a builder fetch or read something beyond the model: never followed from a stored config
#: (its checkpoint holds the weights; a download or an init-weights path there is not the user's request)
NOT_FROM_STORED = {"download": False, "weights": None, "pretrained": None}


def stored_config(config: object, source: str | Path) -> DictConfig:
    """A config read back from a run folder or checkpoint, as inert data for rebuilding models.

    Stored configs are written fully resolved (``to_container``), so an interpolation (``${oc.env:…}``,
    ``${now:…}`` or any resolver) can only be there because someone edited the folder: it is refused,
    never resolved, so a crafted folder cannot copy environment variables into new files or to wandb.
    ``download`` flags and init-weight paths (``weights``, ``pretrained``) are switched off. The run's
    ``plugins`` (module names, never paths) are imported, so its plugin encoders and objectives rebuild.
    """
    if not isinstance(config, dict):
        raise ConfigError(f"{source} holds no config mapping; is it a run folder of `mmssl pretrain`?")
    load_plugins(config.get("plugins") or [])

    def inert(node: Any, path: str) -> Any:
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

    data: dict[str, Any] = inert(config, "")
    return OmegaConf.create(data)
