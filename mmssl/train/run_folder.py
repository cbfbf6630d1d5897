"""One run owns its folder: the rules ``mmssl pretrain``, ``mmssl rl`` and ``mmssl finetune`` share.

``claim(folder, kind, resume=…, config=…)`` is called after the run is built (so a config error never
creates a folder) and before anything is written. It

- takes a fresh folder when none was given (``<default>``, else ``<default>-2``, ``-3``…: ``mkdir`` is
  atomic, so two runs started in the same second never share one);
- locks the folder (``run.lock``: the holder's pid, host, kind and start time; an exclusive ``flock`` on
  it, so a second process refuses at once, and a lock left by a killed process is taken over);
- without ``resume``: refuses a folder that already holds a run (its config, metrics, summary or
  checkpoints), so nothing of another run is overwritten, pruned or mixed in;
- with ``resume``: refuses a folder of another kind (an RL run resumed by ``mmssl pretrain``), a folder
  without checkpoints, one whose every checkpoint is damaged (named, and left as they are), and a config
  whose training-defining keys differ from the stored one (listed; ``resume_override=[key,…]`` allows
  the listed keys), and returns the checkpoint to resume from.

Every refusal is one ``RunFolderError`` line, raised before any file of the folder is changed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import yaml

from mmssl import checkpoint
from mmssl.errors import MMSSLError
from mmssl.logging import console

LOCK = "run.lock"
#: files whose presence means the folder holds (part of) a run
RUN_FILES = ("config.yaml", "metrics.jsonl", "summary.json", "probes.md", "classifier.pt")
KINDS = {"pretrain": "a pretraining run", "rl": "an RL run", "finetune": "a fine-tuning run"}
COMMANDS = {"pretrain": "mmssl pretrain", "rl": "mmssl rl", "finetune": "mmssl finetune"}
#: keys that change where and how a run is shown, saved or evaluated, never what is trained; any other
#: key differing from the stored config refuses a resume unless listed in ``resume_override``
SAFE_KEYS = ("run_dir", "resume", "resume_override", "logger", "progress", "trainer.progress", "threads", "device",
             "log_every", "trainer.log_every", "checkpoint_every", "trainer.checkpoint_every", "keep_checkpoints",
             "trainer.keep_checkpoints", "stop_after_updates", "eval", "trainer.eval_every")


class RunFolderError(MMSSLError):
    """A run folder that is in use, holds another run, or cannot be resumed as asked."""


# -- the lock ----------------------------------------------------------------------------------------------
class RunLock:
    """An exclusive lock on ``folder/run.lock`` holding ``{pid, host, kind, started}`` as JSON.

    ``flock`` does the excluding (the kernel drops it when the holder dies, even by SIGKILL); the JSON
    says who holds it. A file left behind by a dead holder on this host is a stale lock and is taken over.
    """

    def __init__(self, folder: str | Path, kind: str = "run"):
        self.folder, self.kind = Path(folder), kind
        self.path = self.folder / LOCK
        self.fd: int | None = None

    def acquire(self) -> RunLock:
        host = socket.gethostname()
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = _read_lock(fd)
                os.close(fd)
                raise RunFolderError(f"run folder {self.folder} is in use by {_describe(holder)} ({self.path}); "
                                     "wait for that run to finish, or pick another run_dir") from None
            # the holder may have released (and unlinked) the file between our open and flock: lock the new one
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            previous = _read_lock(fd)
            if previous and previous.get("host") not in (None, host):
                os.close(fd)  # a lock from another machine: its flock may not reach us (NFS), so its pid decides
                raise RunFolderError(f"run folder {self.folder} is locked by {_describe(previous)}; if that run is "
                                     f"no longer running, delete {self.path} and retry")
            if previous:
                console(f"taking over the stale lock of {_describe(previous)} in {self.folder} (that process is gone)")
            record = {"pid": os.getpid(), "host": host, "kind": self.kind,
                      "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
            os.fsync(fd)
            self.fd = fd
            return self

    def release(self) -> None:
        if self.fd is None:
            return
        # unlink while still holding it, so a process that opens the path afterwards gets a new file
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self.fd)
        self.fd = None


def _read_lock(fd: int) -> dict | None:
    with contextlib.suppress(OSError, ValueError):
        text = os.pread(fd, 4096, 0).decode()
        record = json.loads(text) if text.strip() else None
        return record if isinstance(record, dict) else None
    return None


def _describe(holder: dict | None) -> str:
    if not holder:
        return "another process"
    return f"pid {holder.get('pid')} on {holder.get('host')} ({holder.get('kind', 'run')} since {holder.get('started')})"


# -- folders -----------------------------------------------------------------------------------------------
def fresh_folder(base: str | Path) -> Path:
    """Create and return ``base`` or, when it exists, the first of ``base-2``, ``base-3``… that this call creates."""
    base = Path(base)
    base.parent.mkdir(parents=True, exist_ok=True)
    for index in range(1, 10_000):
        folder = base if index == 1 else base.with_name(f"{base.name}-{index}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise RunFolderError(f"no free run folder next to {base} (tried 10 000 names); pass run_dir=<path>")


def run_files(folder: str | Path) -> list[str]:
    """The names of what makes ``folder`` hold a run: its run files and checkpoints (empty: a free folder)."""
    folder = Path(folder)
    found = [name for name in RUN_FILES if (folder / name).exists()]
    if checkpoint.checkpoints(folder / "checkpoints"):
        found.append("checkpoints/")
    return found


def kind_of(config: Mapping | None, state: Mapping | None = None) -> str | None:
    """``pretrain``, ``rl`` or ``finetune`` from a stored config (or checkpoint state); None when unknown."""
    if isinstance(config, Mapping):
        if "finetune" in config:
            return "finetune"
        if "agent" in config and "env" in config:
            return "rl"
        if "trainer" in config and "objective" in config:
            return "pretrain"
    if isinstance(state, Mapping):
        return "rl" if "ppo" in state else "pretrain" if "model" in state else None
    return None


def _flatten(node, prefix: str = "") -> dict:
    if isinstance(node, Mapping) and node:
        out = {}
        for key, value in node.items():
            out |= _flatten(value, f"{prefix}{key}.")
        return out
    return {prefix[:-1]: node}


def config_differences(stored: Mapping, current: Mapping, allowed: Iterable[str] = ()) -> list[tuple[str, object, object]]:
    """``(key, stored value, current value)`` for each dotted key that differs and is not allowed.

    A key is allowed when it, or a group above it, is in ``SAFE_KEYS`` or ``allowed``. A key missing on
    one side is reported with ``<unset>``.
    """
    allow = (*SAFE_KEYS, *allowed)
    a, b = _flatten(dict(stored)), _flatten(dict(current))
    unset = "<unset>"
    out = []
    for key in sorted(set(a) | set(b)):
        if any(key == k or key.startswith(k + ".") for k in allow):
            continue
        old, new = a.get(key, unset), b.get(key, unset)
        if old != new:
            out.append((key, old, new))
    return out


class RunFolder:
    """A claimed, locked run folder; ``resume_from`` is ``(checkpoint path, state)`` when resuming."""

    def __init__(self, path: Path, lock: RunLock, resume_from: tuple[Path, dict] | None, created: bool = False):
        self.path, self.lock, self.resume_from, self.created = path, lock, resume_from, created

    def release(self) -> None:
        """Unlock; a folder this claim created is removed again when the run wrote nothing into it."""
        self.lock.release()
        if self.created:
            with contextlib.suppress(OSError):
                self.path.rmdir()  # only when empty

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def claim(folder: str | Path | None, kind: str, *, resume: bool = False, config: Mapping | None = None,
          allow: Iterable[str] = (), default: Callable[[], Path] | None = None,
          ckpt_dir: str = "checkpoints", what: str = "run_dir") -> RunFolder:
    """Lock the run folder ``folder`` (or a fresh one next to ``default()`` when None) for a ``kind`` run.

    ``config``: the run's resolved config, compared with the stored one on resume; ``allow``: keys that
    may differ (``resume_override``); ``what``: the config key naming the folder, for the messages.
    Raises ``RunFolderError`` (one line) on every refusal, with the folder as it was.
    """
    if folder is None:
        if resume:
            raise RunFolderError(f"resume=true needs {what}=<the run folder to continue>")
        if default is None:
            raise RunFolderError(f"pass {what}=<path>")
        path = fresh_folder(default())
        return RunFolder(path, RunLock(path, kind).acquire(), None, created=True)
    path = Path(folder)
    if resume and not path.is_dir():
        raise RunFolderError(f"resume=true but run folder {path} does not exist; check {what}, "
                             "or drop resume=true to start a new run there")
    if path.exists() and not path.is_dir():
        raise RunFolderError(f"{what}={path} is a file, not a folder; pick another {what}")
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    lock = RunLock(path, kind)
    try:
        lock.acquire()
        found = _check(path, kind, resume, config, allow, path / ckpt_dir, what)
    except BaseException:
        lock.release()
        if created:
            with contextlib.suppress(OSError):
                path.rmdir()  # only when still empty
        raise
    return RunFolder(path, lock, found, created)


def _stored_config(path: Path) -> dict | None:
    with contextlib.suppress(OSError, yaml.YAMLError):
        loaded = yaml.safe_load((path / "config.yaml").read_text())
        return loaded if isinstance(loaded, dict) else None
    return None


def _check(path: Path, kind: str, resume: bool, config: Mapping | None, allow: Iterable[str], ckpt_dir: Path,
           what: str) -> tuple[Path, dict] | None:
    present = run_files(path)
    stored = _stored_config(path)
    stored_kind = kind_of(stored)
    if not resume:
        if present:
            held = KINDS.get(stored_kind, "a run")
            hint = "resume it with resume=true, or " if stored_kind in (None, kind) and kind != "finetune" else ""
            raise RunFolderError(f"{what}={path} already holds {held} ({', '.join(present)}); {hint}pick a new "
                                 f"{what} (or leave it unset for a fresh folder); nothing was written")
        return None
    if stored_kind is not None and stored_kind != kind:
        raise RunFolderError(f"run folder {path} holds {KINDS[stored_kind]}, not {KINDS[kind]}; continue it with "
                             f"`{COMMANDS[stored_kind]} resume=true run_dir={path}`")
    paths = checkpoint.checkpoints(ckpt_dir)
    if not paths:
        holds = f"it holds {', '.join(present)} but no step_*.pt" if present else "it holds no run"
        raise RunFolderError(f"resume=true but {path} has no checkpoint to resume from ({holds}); drop resume=true "
                             f"and pick a new {what} to start a fresh run")
    damaged = {p: checkpoint.damage(p) for p in paths}
    if all(damaged.values()):
        names = ", ".join(f"{p.name} ({'fails its checksum' if 'checksum' in reason else 'unloadable'})"
                          for p, reason in damaged.items())
        raise RunFolderError(f"resume=true but every checkpoint in {ckpt_dir} is damaged: {names}; nothing was "
                             "changed: restore a good copy of one, or move them away and start a fresh run "
                             f"with a new {what}")
    resume_path = max((p for p, reason in damaged.items() if reason is None), key=paths.index)
    for p in paths[paths.index(resume_path) + 1:]:
        console(f"warning: {damaged[p]}; resuming from the earlier {resume_path.name} (the damaged file is kept)")
    state = checkpoint.load(resume_path)
    saved_kind = kind_of(state.get("config"), state)
    if saved_kind is not None and saved_kind != kind:
        raise RunFolderError(f"the checkpoints in {path} are of {KINDS[saved_kind]}, not {KINDS[kind]}; continue "
                             f"it with `{COMMANDS[saved_kind]} resume=true run_dir={path}`")
    reference = state.get("config") if isinstance(state.get("config"), Mapping) else stored
    if config is not None and reference is not None:
        diffs = config_differences(reference, config, allow)
        if diffs:
            shown = "; ".join(f"{k} (stored {old!r}, now {new!r})" for k, old, new in diffs[:6])
            more = f"; and {len(diffs) - 6} more" if len(diffs) > 6 else ""
            keys = ",".join(k for k, _, _ in diffs)
            raise RunFolderError(f"resume=true but {len(diffs)} training-defining key(s) differ from the run in "
                                 f"{path}: {shown}{more}; nothing was written: resume with the stored values, or "
                                 f"allow the change with resume_override=[{keys}]")
    return resume_path, state


def claim_on_rank0(rank: int, world: int, folder: str | Path | None, kind: str, **kwargs) -> RunFolder | None:
    """:func:`claim` on rank 0 only (the other ranks write nothing: they get None).

    Under torchrun a refusal on rank 0 is raised on every rank, instead of leaving the others waiting for
    rank 0 in the first collective.
    """
    claimed, refused = None, None
    if rank == 0:
        try:
            claimed = claim(folder, kind, **kwargs)
        except MMSSLError as exc:
            refused = exc
    if world > 1:
        from mmssl.train import distributed

        reason = distributed.gather_objects(None if refused is None else str(refused))[0]
        if reason is not None and refused is None:
            raise MMSSLError(f"rank 0 refused the run folder: {reason}")
    if refused is not None:
        raise refused
    return claimed
