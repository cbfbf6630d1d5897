"""Hydra's own command line for the commands that compose a config (``mmssl pretrain``, ``mmssl rl``).

The flags are parsed by Hydra's argument parser, so they mean what they mean in any Hydra app:

  --help / -h                      usage, the config groups with their options, and the composed config
  --cfg job|all [--resolve] [-p P] print the composed config (or one package of it) and exit
  --info [searchpath|defaults|config|plugins|all]   how the config was found and composed
  -m / --multirun k=a,b …          one run per combination (Hydra's basic sweeper), one run folder each
  -cd / --config-dir DIR           a user config folder in front of the packaged configs
  -sc / --shell-completion install=bash|uninstall=bash   shell completion (query=bash is its callback)

Composition itself stays :func:`mmssl.config.compose`, so every mistake is still one ``error:`` line with
suggestions, and run folders are mmssl's (Hydra writes no ``outputs/`` folder and does not change directory).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from mmssl import config
from mmssl.errors import ConfigError

#: command → primary config name
CONFIG_NAMES = {"pretrain": "pretrain", "rl": "rl"}


def main(command: str, argv: list[str], run: Callable[[list[str]], object]) -> None:
    """Parse Hydra's flags from ``argv``, then print help/config/info, install completion or run (once or a sweep)."""
    from hydra._internal.utils import get_args_parser

    parser = get_args_parser()
    parser.prog = f"mmssl {command}"
    parser.error = _parse_error  # an unknown flag is one error line, not argparse's usage block
    from mmssl._version import __version__

    for action in parser._actions:  # --version names mmssl, not Hydra
        if action.dest == "version":
            action.version = f"mmssl {__version__}"
    args = parser.parse_args(argv)
    name = args.config_name or CONFIG_NAMES[command]
    if args.config_dir:
        config.add_config_dir(args.config_dir)
    if args.config_path:
        raise ConfigError("--config-path is for @hydra.main scripts; pass --config-dir DIR to add a config folder")
    overrides = list(args.overrides)
    if args.shell_completion:
        return completion(command, name, overrides)
    if args.help:
        return print(help_text(command, name, overrides))
    if args.hydra_help:
        return print(__doc__)
    if args.info:
        return print(info(name, overrides, args.info))
    if args.cfg:
        return print(show_config(name, overrides, args.cfg, args.package, args.resolve))
    if args.multirun:
        return multirun(command, name, overrides, run)
    run(overrides)


def _parse_error(message: str):
    raise ConfigError(f"{message}; see --help")


def help_text(command: str, name: str, overrides: list[str]) -> str:
    groups = config.config_groups(name)
    lines = [f"mmssl {command} [--cfg job|all] [--info] [-m] [-cd DIR] [-sc install=bash] [key=value …]", "",
             "== Configuration groups ==",
             "Compose your configuration from those groups (group=option); any registered name is an option too.",
             ""]
    for group, options in groups.items():
        lines.append(f"{group}: {', '.join(options)}")
    lines += ["", "== Config ==", "Override anything in the config (foo.bar=value); +key=value adds a key.", "",
              show_config(name, overrides, "job", None, False)]
    return "\n".join(lines)


def show_config(name: str, overrides: list[str], which: str, package: str | None, resolve: bool) -> str:
    from omegaconf import OmegaConf

    if which == "hydra":
        raise ConfigError("mmssl does not use Hydra's own job settings; --cfg job shows the whole config")
    cfg = config.compose(name, overrides)  # resolved: the config exactly as the run would see it
    if package:
        node = OmegaConf.select(cfg, package, default=None)
        if node is None:
            raise ConfigError(f"--package {package!r} is not a key of the config; try one of {', '.join(cfg)}")
        return OmegaConf.to_yaml(node) if OmegaConf.is_config(node) else str(node)
    return OmegaConf.to_yaml(cfg, resolve=resolve)


def info(name: str, overrides: list[str], what: str) -> str:
    from omegaconf import OmegaConf

    from mmssl import plugins

    cfg = config.compose(name, overrides)
    parts = {
        "searchpath": ["Config search path (first match wins):",
                       *(f"  {p}" for p in config.search_dirs()), "  structured:// (registered entries)"],
        "defaults": ["Defaults (group: option):",
                     *(f"  {g}: {_choice(cfg, g)}" for g in config.config_groups(name))],
        "plugins": ["Plugins loaded:", *([f"  {m} ({src})" for m, src in plugins.loaded().items()] or ["  none"])],
        "config": ["Config:", OmegaConf.to_yaml(cfg)],
    }
    keys = list(parts) if what == "all" else [what]
    if any(k not in parts for k in keys):
        raise ConfigError(f"--info {what!r}: choose one of all, {', '.join(parts)}")
    return "\n".join(line for k in keys for line in parts[k])


def _choice(cfg, group: str) -> str:
    node = cfg.get(group)
    if node is None:
        return "null"
    if group in ("objective", "encoder"):  # slot/modality dicts
        return ", ".join(f"{k}={v.get('name', '?')}" for k, v in node.items()) or "none"
    return str(node.get("name", "(no name)")) if hasattr(node, "get") else str(node)


def multirun(command: str, name: str, overrides: list[str], run: Callable[[list[str]], object]) -> None:
    """One run per combination of the comma-separated values (Hydra's basic sweeper), each in its own folder.

    ``run_dir=X`` puts the jobs in ``X/0``, ``X/1``…; without it they go to
    ``runs/multirun/<timestamp>-<command>/<n>``. Every job is composed (and so validated) before the first starts.
    """
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as exc:
        raise ConfigError(f"cannot parse the sweep overrides ({' '.join(str(exc).split())[:200]})") from None
    jobs = [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    root = next((o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0] == "run_dir"), None)
    if root is None:
        root = os.path.join("runs", "multirun", f"{time.strftime('%Y%m%d-%H%M%S')}-{command}")
    if os.path.exists(root) and os.listdir(root):
        raise ConfigError(f"sweep folder {root} is not empty; pass run_dir=<a new folder> for this sweep")
    jobs = [[o for o in job if o.split("=", 1)[0] != "run_dir"] + [f"run_dir={os.path.join(root, str(i))}"]
            for i, job in enumerate(jobs)]
    for job in jobs:
        config.compose(name, job)
    print(f"[multirun] {len(jobs)} job(s) in {root}")
    for i, job in enumerate(jobs):
        print(f"[multirun] #{i} : {' '.join(job[:-1]) or '(defaults)'}")
        run(job)


def completion(command: str, name: str, words: list[str]) -> None:
    """``-sc install=bash`` prints the bash hook; the hook calls back ``mmssl -sc query=bash`` per keystroke."""
    from hydra._internal.core_plugins.bash_completion import BashCompletion

    if len(words) != 1 or "=" not in words[0]:
        raise ConfigError("use -sc install=bash, -sc uninstall=bash or -sc query=bash")
    action, shell = words[0].split("=", 1)
    if shell != "bash":
        raise ConfigError(f"shell {shell!r} is not supported; use bash")
    with config.hydra_context() as hydra:
        plugin = BashCompletion(config_loader=hydra.config_loader)
        if action == "install":
            plugin.install()
        elif action == "uninstall":
            plugin.uninstall()
        elif action == "query":
            plugin.query(config_name=name)
        else:
            raise ConfigError(f"-sc {action}=bash: use install, uninstall or query")


def query_from_shell() -> None:
    """The callback of the installed hook: ``COMP_LINE`` is ``mmssl <command> …``; complete for that command."""
    line = os.environ.get("COMP_LINE", "")
    words = line.split(" ", 2)
    if len(words) < 3 or words[1] not in CONFIG_NAMES:  # still typing the command itself
        typed = words[1] if len(words) > 1 else ""
        print(" ".join(c for c in ("pretrain", "rl", "eval", "embed", "finetune", "export", "sweep", "report",
                                   "list") if c.startswith(typed)))
        return
    os.environ["COMP_LINE"] = f"mmssl {words[2]}"  # Hydra strips the first word (the app name)
    completion(words[1], CONFIG_NAMES[words[1]], ["query=bash"])
