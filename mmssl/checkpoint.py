"""Atomic, verifiable checkpoints and exact RNG capture.

A checkpoint is one torch file written to a temporary name, fsynced and renamed, so a kill at any
moment leaves either the previous file or the new one — never a partial one. A SHA-256 of the bytes is
stored beside it (``<file>.sha256``, written after the rename); loading verifies it, and ``latest``
falls back to the previous valid checkpoint with a warning. Loading always uses ``weights_only=True``:
RNG states and configs are stored as tensors and plain containers so that nothing needs pickle.
"""

from __future__ import annotations

import hashlib
import io
import random
import re
import warnings
from pathlib import Path

import numpy as np
import torch

from mmssl.errors import ConfigError, MMSSLError, NonFiniteError
from mmssl.io import atomic_write


class CheckpointError(MMSSLError):
    """A checkpoint that is missing, truncated, tampered with or from another architecture."""


def capture_rng() -> dict:
    """torch, numpy and Python RNG states as weights_only-loadable values."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": py_state[0], "state": list(py_state[1]), "gauss": py_state[2]},
    }


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


def save(state: dict, path: str | Path) -> Path:
    """Write ``state`` atomically to ``path`` (temp file, fsync, rename) plus its SHA-256 sidecar."""
    path = Path(path)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    try:
        atomic_write(path, data)
        atomic_write(path.with_name(path.name + ".sha256"), hashlib.sha256(data).hexdigest() + "\n")
    except OSError as exc:
        raise CheckpointError(f"could not write checkpoint {path}: {exc.strerror or exc}; earlier checkpoints are intact") from None
    return path


def load(path: str | Path, verify: bool = True) -> dict:
    """Load a checkpoint with ``weights_only=True`` after checking its SHA-256 (when the sidecar exists)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    data = path.read_bytes()
    digest_file = path.with_name(path.name + ".sha256")
    if verify and digest_file.exists() and hashlib.sha256(data).hexdigest() != digest_file.read_text().strip():
        raise CheckpointError(f"checkpoint {path} fails its checksum (truncated or modified); use an earlier one")
    from mmssl import safe_load

    return safe_load.load(data, f"checkpoint {path}", CheckpointError)  # weights_only, one-line refusal


_STEP = re.compile(r"step_(\d+)\.pt$")


def checkpoints(directory: str | Path) -> list[Path]:
    """``step_*.pt`` files in ``directory``, oldest first."""
    d = Path(directory)
    found = [(int(m.group(1)), p) for p in d.glob("step_*.pt") if (m := _STEP.search(p.name))]
    return [p for _, p in sorted(found)]


def latest(directory: str | Path) -> tuple[Path, dict] | None:
    """The newest checkpoint that loads and verifies, falling back (with a warning) past broken ones."""
    for path in reversed(checkpoints(directory)):
        try:
            return path, load(path)
        except CheckpointError as exc:
            warnings.warn(f"{exc}; falling back to the previous checkpoint", stacklevel=2)
    return None


RUN_OR_FILE = "a pretraining run folder or a step_*.pt file"


def find(target: str | Path, accepts: str = RUN_OR_FILE) -> tuple[Path, Path, dict]:
    """(run folder, checkpoint path, state) of ``target``: a run folder (its newest valid checkpoint in
    ``checkpoints/``, or in the folder itself) or a checkpoint file (its run folder: the one above
    ``checkpoints/``, else its own folder). The one place that finds the checkpoint of a run; ``accepts``
    says in the error what the caller takes."""
    path = Path(target)
    if path.is_dir():
        found = latest(path / "checkpoints") or latest(path)
        if found is None:
            raise ConfigError(f"no valid checkpoint in {path} (looked in {path / 'checkpoints'}); pass {accepts}")
        return path, found[0], found[1]
    if not path.exists():
        raise ConfigError(f"{path} does not exist; pass {accepts}")
    state = load(path)
    return (path.parent.parent if path.parent.name == "checkpoints" else path.parent), path, state


def encoder_weights(model_state: dict, modality: str) -> dict[str, torch.Tensor]:
    """The ``encoders.<modality>.*`` entries of a pretraining model's state dict, prefix removed: the
    weights of one modality's encoder, as its own ``load_state_dict`` reads them."""
    prefix = f"encoders.{modality}."
    return {k[len(prefix):]: v for k, v in model_state.items() if k.startswith(prefix)}


_WARNED: set[str] = set()


def damage(path: str | Path) -> str | None:
    """Why the checkpoint at ``path`` is unusable (its one-line error), or None when it loads and verifies."""
    try:
        load(path)
    except CheckpointError as exc:
        return str(exc)
    return None


def prune(directory: str | Path, keep: int, current: str | Path | None = None) -> list[Path]:
    """Delete valid checkpoints older than the newest ``keep`` valid ones (and their checksums), and temp
    files of killed writers; returns the damaged checkpoints it kept.

    A damaged checkpoint (fails its checksum or does not load) is never deleted, nor counted among the
    ``keep``: it stays for a person to look at, with a warning. ``current`` (the file just written) and
    anything newer than it are never deleted either.
    """
    found = checkpoints(directory)
    if current is not None:
        current = Path(current)
        newest = _STEP.search(current.name)
        limit = int(newest.group(1)) if newest else None
        found = [p for p in found if limit is None or int(_STEP.search(p.name).group(1)) < limit]
        valid, damaged = 1, []  # the file just written counts as one of the kept
    else:
        valid, damaged = 0, []
    for path in reversed(found):
        reason = damage(path)
        if reason is not None:
            damaged.append(path)
            if str(path) not in _WARNED:  # once per file and process, not at every save
                _WARNED.add(str(path))
                warnings.warn(f"{reason}; keeping it (not pruned)", stacklevel=2)
        elif valid < keep or keep <= 0:
            valid += 1
        else:
            path.unlink(missing_ok=True)
            path.with_name(path.name + ".sha256").unlink(missing_ok=True)
    # a writer SIGKILLed mid-save leaves a full-size .step_*.pt.tmp-<pid>; this process's own can't be in flight here
    for stale in Path(directory).glob(".step_*.pt*tmp*"):
        stale.unlink(missing_ok=True)
    return damaged


def save_checked(state: dict, path: str | Path, keep: int, weights: dict[str, dict], when: str,
                 what: str = "weights") -> Path:
    """Save ``state`` to ``path`` atomically and prune its folder to ``keep`` checkpoints, refusing (one
    ``NonFiniteError`` line, nothing written) when a tensor of ``weights`` (part name → state dict; ``""``:
    no prefix) holds a NaN or Inf: a checkpoint is only ever a state worth resuming."""
    path = Path(path)
    bad = [f"{part}.{name}" if part else name for part, tensors in weights.items() for name in nonfinite_tensors(tensors)]
    if bad:
        raise NonFiniteError(f"{what} became non-finite by {when} ({', '.join(bad[:3])}); no checkpoint written, "
                             f"the last good one in {path.parent} is intact")
    path = save(state, path)
    prune(path.parent, keep, current=path)
    return path


def nonfinite_tensors(tensors) -> list[str]:
    """Names of the floating-point tensors in a state dict (name → tensor) holding a NaN or Inf."""
    return [name for name, value in tensors.items()
            if isinstance(value, torch.Tensor) and value.is_floating_point() and not torch.isfinite(value).all()]


def load_matching(module: torch.nn.Module, state: dict, what: str = "model") -> None:
    """``load_state_dict`` that fails with one line listing missing/unexpected/mismatched keys."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    # non-tensor entries are modules' extra state (e.g. an objective's internal optimiser), not shaped
    mismatched = sorted(k for k in set(own) & set(state)
                        if torch.is_tensor(own[k]) and getattr(state[k], "shape", None) != own[k].shape)
    if missing or unexpected or mismatched:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape-mismatched", mismatched)):
            if keys:
                parts.append(f"{label} {keys[:5]}{' …' if len(keys) > 5 else ''}")
        raise CheckpointError(f"{what} checkpoint does not fit this architecture: {'; '.join(parts)}")
    module.load_state_dict(state)
