"""The repository holds no run outputs: studies commit their README, small results tables and plots; run
folders, checkpoints, per-step logs, run GIFs and patch files are regenerated (or live in history), not tracked.

The check reads ``git ls-files`` and is skipped outside a git checkout (an installed wheel, an sdist)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path, PurePosixPath

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: folder names that only run outputs use
RUN_FOLDERS = {"runs", "checkpoints", "wandb", "outputs"}
#: file suffixes of checkpoints, weights and diffs
FORBIDDEN_SUFFIXES = {".pt", ".pth", ".ckpt", ".safetensors", ".onnx", ".patch", ".diff", ".log"}
#: per-step logs a run writes
FORBIDDEN_NAMES = {"metrics.jsonl", "wallclock.txt"}
GIF_LIMIT = 300_000  # a curated episode GIF in a study README is a plot; a larger one is a run output
STUDY_LIMIT = 1_000_000  # any file under experiments/ or bench/: results tables and plots are far smaller


def run_outputs(files: dict[str, int | None]) -> list[str]:
    """The entries of ``files`` (repository path → size in bytes, None when unknown) that are run outputs,
    each with the reason."""
    bad = []
    for name, size in sorted(files.items()):
        path = PurePosixPath(name)
        folders = RUN_FOLDERS.intersection(path.parts[:-1])
        if folders:
            bad.append(f"{name}: inside a {sorted(folders)[0]}/ folder")
        elif path.suffix.lower() in FORBIDDEN_SUFFIXES:
            bad.append(f"{name}: a {path.suffix} file")
        elif path.name in FORBIDDEN_NAMES:
            bad.append(f"{name}: a run's per-step log")
        elif size is not None and path.suffix.lower() == ".gif" and size > GIF_LIMIT:
            bad.append(f"{name}: a {size:,}-byte GIF (limit {GIF_LIMIT:,})")
        elif size is not None and path.parts[0] in ("experiments", "bench") and size > STUDY_LIMIT:
            bad.append(f"{name}: {size:,} bytes (limit {STUDY_LIMIT:,} under experiments/ and bench/)")
    return bad


def tracked_files() -> dict[str, int | None]:
    """path → size of every file git tracks here (None: tracked but absent from the working tree)."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=ROOT, capture_output=True, text=True)
    if top.returncode or Path(top.stdout.strip()).resolve() != ROOT:
        pytest.skip(f"{ROOT} is not the top of a git checkout")
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    names = [n for n in out.decode().split("\0") if n]
    return {n: (ROOT / n).stat().st_size if (ROOT / n).is_file() else None for n in names}


def test_no_run_outputs_are_tracked():
    files = tracked_files()
    assert "setup.cfg" in files and "mmssl/__init__.py" in files  # the listing is this checkout's
    bad = run_outputs(files)
    assert not bad, "run outputs are tracked (regenerate them under runs/, commit a summary table):\n" + "\n".join(bad)


@pytest.mark.parametrize("name,size", [
    ("experiments/rl_core/runs/cartpole_s1/summary.json", 500),
    ("runs/flagship/bind/seed0/config.yaml", 900),
    ("experiments/x/checkpoints/step_10.pt", None),
    ("experiments/reliability/shared-fixes.patch", 10_808),
    ("experiments/x/metrics.jsonl", 40_000),
    ("experiments/rl_core/halfcheetah.gif", 626_350),
    ("bench/results/raw.json", 2_000_000),
    ("mmssl/weights.safetensors", 10),
])
def test_each_kind_of_run_output_is_caught(name, size):
    assert len(run_outputs({name: size})) == 1


@pytest.mark.parametrize("name,size", [
    ("experiments/rl_core/README.md", 8_000),
    ("experiments/rl_core/curves.csv", 18_000),
    ("experiments/rl_core/doorkey_episode.gif", 13_894),
    ("experiments/exploration/results_multiroom.jsonl", 77_560),
    ("bench/results/scaling_batch.png", 40_000),
    ("mmssl/rl/run.py", 30_000),
    ("configs/logger/wandb.yaml", 200),
])
def test_study_files_pass(name, size):
    assert run_outputs({name: size}) == []
