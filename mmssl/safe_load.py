"""``torch.load`` with ``weights_only=True`` and a one-line refusal, for checkpoints and local encoder weights.

A file that holds pickled code (``os.system`` in a ``__reduce__``) or objects that are not tensors and
plain containers is refused without running anything; the message names the file and what it holds,
and never repeats torch's advice to retry with ``weights_only=False`` (that advice is how such a file
would run its code).
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import torch

from mmssl.errors import MMSSLError


def why_unsafe(exc: BaseException) -> str:
    """What torch's weights_only unpickler refused, in a few words (never its weights_only=False advice)."""
    text = str(exc)
    if m := re.search(r"GLOBAL ([\w.]+)", text):
        return f"pickled code or objects ({m.group(1)}), which are never run or built here"
    if "Unsupported operand" in text or "invalid load key" in text or "magic number" in text.lower():
        return "bytes that are not a torch file (corrupt or another format)"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and "weights_only" not in ln
             and "trusted source" not in ln and "documentation" not in ln and "file an issue" not in ln]
    return (lines[0][:160] if lines else type(exc).__name__)


def load(source: str | Path | bytes, what: str = "file", error: type[MMSSLError] = MMSSLError):
    """``torch.load(source, weights_only=True)`` on the CPU; any failure → ``error`` naming ``what``."""
    try:
        return torch.load(io.BytesIO(source) if isinstance(source, bytes) else source, map_location="cpu",
                          weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unpickling errors come in many types; all mean "unusable"
        raise error(f"{what} cannot be loaded safely: it holds {why_unsafe(exc)}; only tensors and plain "
                    "containers are loaded (re-save it as a state dict or safetensors)") from None
