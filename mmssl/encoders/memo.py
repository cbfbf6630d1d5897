"""Encode each distinct input once, and remember what a frozen encoder said.

Observations of grid and instruction tasks repeat the same pictures, sentences and clips over and over:
a DigitGrid rollout of 512 frames shows perhaps 150 distinct digit images and a handful of instructions.
``RowMemo`` runs a function once per distinct row of its input (rows compared by their bytes) and
scatters the results back; with ``remember=True`` — only for functions that never change, i.e. frozen
towers in inference mode — it also keeps every output in a bounded table across calls, so a frozen
pretrained encoder costs nothing once it has seen each picture. Gradients flow through the distinct
rows when the function is trainable.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch


def distinct_rows(x: torch.Tensor) -> tuple[list[bytes], torch.Tensor, torch.Tensor]:
    """Rows of x (M, ...) by content → (keys of the U distinct rows, (U,) first index of each, (M,) inverse)."""
    flat = x.detach().reshape(len(x), -1).contiguous().cpu().numpy()
    slot: dict[bytes, int] = {}
    inverse = np.empty(len(flat), np.int64)
    first: list[int] = []
    for i, row in enumerate(flat):
        key = row.tobytes()
        j = slot.setdefault(key, len(slot))
        if j == len(first):
            first.append(i)
        inverse[i] = j
    return list(slot), torch.as_tensor(first, dtype=torch.long), torch.from_numpy(inverse)


class RowMemo:
    """Apply ``fn`` (M, ...) → (M, D) once per distinct input row; remember outputs when told the fn is frozen.

    ``max_entries`` bounds the remembered table (it starts over when full); ``len(memo)`` is its size.
    """

    def __init__(self, max_entries: int = 200_000):
        self.max_entries = max_entries
        self.slots: dict[bytes, int] = {}
        self.table: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.slots)

    def clear(self) -> None:
        self.slots, self.table = {}, None

    def __call__(self, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                 remember: bool = False) -> torch.Tensor:
        if len(x) == 0:
            return fn(x)
        keys, first, inverse = distinct_rows(x)
        inverse = inverse.to(x.device)
        if not remember:
            return fn(x[first.to(x.device)])[inverse]
        missing = [j for j, key in enumerate(keys) if key not in self.slots]
        if missing:
            if len(self.slots) + len(missing) > self.max_entries:
                self.clear()
                missing = list(range(len(keys)))
            with torch.no_grad():
                out = fn(x[first[missing].to(x.device)]).detach()
            start = len(self.slots)
            self.table = out if self.table is None else torch.cat([self.table, out.to(self.table)])
            for offset, j in enumerate(missing):
                self.slots[keys[j]] = start + offset
        rows = torch.as_tensor([self.slots[key] for key in keys], dtype=torch.long, device=self.table.device)
        return self.table[rows][inverse.to(self.table.device)].to(x.device)
