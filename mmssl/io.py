"""Atomic file writes: every file a run leaves behind is either the old version or the complete new one.

``atomic_write(path, data)`` writes to a temporary name in the same folder, fsyncs it, renames it over
``path`` (``os.replace`` is atomic on POSIX) and fsyncs the folder, so a kill or a full disk at any
moment never leaves a partial file. Checkpoints, configs, summaries, metrics trims, reports and plots all
go through it.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

from mmssl.errors import MMSSLError


class WriteError(MMSSLError, OSError):
    """A file that could not be written (full disk, no permission); the previous version is intact."""

    def __init__(self, message: str, errno_: int | None, strerror: str | None):
        super().__init__(errno_, strerror)
        self.message = message

    def __str__(self) -> str:
        return self.message


def atomic_write(path: str | Path, data: str | bytes) -> Path:
    """Write ``data`` (text is UTF-8 encoded) to ``path`` atomically; on failure ``path`` is untouched.

    The temporary file (``.<name>.tmp-<pid>``) is removed when the write fails (a full disk raises
    ``OSError`` here, not later); the failure is raised as ``WriteError``, one line naming the file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise WriteError(f"could not write {path}: {exc.strerror or exc}; its previous version (if any) is intact",
                         exc.errno, exc.strerror) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def save_figure(fig, path: str | Path, **kwargs) -> Path:
    """``fig.savefig`` through :func:`atomic_write` (the format follows the suffix, as savefig's does)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format=Path(path).suffix.lstrip(".") or "png", **kwargs)
    return atomic_write(path, buffer.getvalue())


def _fsync_dir(folder: Path) -> None:
    # the rename is durable only once the folder's entry is on disk; some filesystems refuse fsync on folders
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
