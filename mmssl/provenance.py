"""What produced a run: mmssl's version and commit, Python, the main libraries, the plugins.

Written to ``<run_dir>/environment.json`` next to ``config.yaml`` by every run, so a number in a table can be
traced to the code and library versions that made it.
"""

from __future__ import annotations

import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

#: distributions whose versions change results (the first is mmssl itself)
LIBRARIES = ("mmssl", "torch", "torchvision", "torchaudio", "open_clip_torch", "numpy", "scikit-learn",
             "gymnasium", "minigrid", "hydra-core", "omegaconf", "wandb", "einops", "soundfile", "optuna")


def environment() -> dict:
    """``{mmssl, git, python, platform, libraries, plugins}`` of this process (no network; git only for a checkout)."""
    from mmssl import plugins
    from mmssl._version import __version__

    return {
        "mmssl": __version__,
        "git": git_state(Path(__file__).resolve().parents[1]),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "libraries": {name: _version(name) for name in LIBRARIES},
        "plugins": {module: {"source": source, "version": _version(module.split(".")[0])}
                    for module, source in plugins.loaded().items()},
    }


def git_state(folder: Path) -> dict | None:
    """Commit and dirty flag when mmssl runs from a git checkout; ``None`` for an installed wheel."""
    if not (folder / ".git").exists():
        return None
    try:
        commit = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip() != ""
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty}


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None
