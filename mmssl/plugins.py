"""Plugins: user modules that register objectives, encoders, augmentations, datasets, intrinsic rewards or
gymnasium environments.

Two ways in, both loaded before a config is composed or a stored run is rebuilt:

- the config key ``plugins=[my_pkg.mmssl_ext]`` (stored in the run folder, so ``mmssl eval``, ``finetune``,
  ``export`` and ``resume=true`` of that run import them again);
- the ``mmssl.plugins`` entry-point group of any installed distribution, e.g. in its ``pyproject.toml``::

      [project.entry-points."mmssl.plugins"]
      my_ext = "my_pkg.mmssl_ext"

A plugin is a module name, never a path: importing it runs the installed (or current-folder) module of that
name, so a stored config can only ask for code the user already has.
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Iterable
from importlib.metadata import entry_points
from pathlib import Path

from mmssl.errors import ConfigError

ENTRY_POINT_GROUP = "mmssl.plugins"
_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_loaded: dict[str, str] = {}  # module name → where it was asked for ("config" or the entry point's name)
_entry_points_loaded = False


def load_plugins(modules: Iterable[str] = ()) -> list[str]:
    """Import the entry-point plugins (once) and ``modules``; returns the module names imported so far.

    A name that is not a dotted module name, or a module that fails to import, is a one-line ``ConfigError``.
    """
    load_entry_points()
    for name in modules:
        name = str(name).strip()
        if name in _loaded:
            continue
        if not _MODULE_NAME.match(name):
            raise ConfigError(f"plugin {name!r} is not a module name; write plugins=[my_pkg.my_module] "
                              "(a module importable from this environment or the current folder)")
        _import(name, "config")
    return list(_loaded)


def load_entry_points() -> None:
    """Import every module of the ``mmssl.plugins`` entry-point group (once per process)."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.module not in _loaded:
            _import(ep.module, f"entry point {ep.name}")


def loaded() -> dict[str, str]:
    """``{module: source}`` of every plugin imported in this process."""
    return dict(_loaded)


def _import(name: str, source: str) -> None:
    cwd = str(Path.cwd())
    if cwd not in sys.path:  # the user's own project folder, after installed packages (it never shadows them)
        sys.path.append(cwd)
    try:
        importlib.import_module(name)
    except ImportError as exc:
        raise ConfigError(f"plugin {name!r} cannot be imported ({exc}); install it or run mmssl from the folder "
                          "that holds it") from None
    except Exception as exc:  # the plugin's own bug: name it rather than a traceback from deep inside
        raise ConfigError(f"plugin {name!r} failed while importing: {type(exc).__name__}: {exc}") from None
    _loaded[name] = source
