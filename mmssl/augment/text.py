"""Batched token-id augmentations on (B, L) open_clip BPE ids: masking, deletion and adjacent swaps.

Only *content* tokens change: the start (49406) and end (49407) tokens and the padding (0) stay where
they are (deletion shifts the remaining content left and pads the tail), so pooling that finds the
end token and padding masks keep working. Every op is one batched tensor program, not a Python loop
over strings.
"""

from __future__ import annotations

import torch

from mmssl.augment.base import Augmentation, coin
from mmssl.data.tokenize import EOT_ID, PAD_ID, SOT_ID
from mmssl.registry import AUGMENTATIONS
from mmssl.types import TEXT

#: BPE id of "*", standing in for a mask token (open_clip's vocabulary has none)
MASK_ID = 265


def content_mask(ids: torch.Tensor) -> torch.Tensor:
    """(B, L) bool: True on real word pieces (not start, end or padding)."""
    return (ids != SOT_ID) & (ids != EOT_ID) & (ids != PAD_ID)


def mask_tokens(ids: torch.Tensor, p: float = 0.15, mask_id: int = MASK_ID, generator=None) -> torch.Tensor:
    """Replace each content token by ``mask_id`` with probability ``p``."""
    hit = torch.rand(ids.shape, generator=generator, device=ids.device) < p
    return torch.where(hit & content_mask(ids), torch.full_like(ids, mask_id), ids)


def delete_tokens(ids: torch.Tensor, p: float = 0.1, generator=None) -> torch.Tensor:
    """Drop each content token with probability ``p`` (a clip never loses all of its content).

    Survivors keep their order and move left (a stable sort on the drop flag); the tail becomes padding.
    """
    content = content_mask(ids)
    drop = (torch.rand(ids.shape, generator=generator, device=ids.device) < p) & content
    drop &= (content & ~drop).any(dim=1, keepdim=True)  # a row whose every content token was drawn keeps them all
    order = torch.sort(drop.to(torch.uint8), dim=1, stable=True).indices
    out = ids.gather(1, order)
    kept = (~drop).sum(dim=1, keepdim=True)
    return torch.where(torch.arange(ids.shape[1], device=ids.device) < kept, out, torch.full_like(out, PAD_ID))


def swap_tokens(ids: torch.Tensor, p: float = 0.1, generator=None) -> torch.Tensor:
    """With probability ``p`` per text, swap one random pair of adjacent content tokens.

    One gather with per-row source positions and no data-dependent branch, so it never waits on the
    device (no host sync) and runs the same on any device.
    """
    b, n = ids.shape
    content = content_mask(ids)
    can = content[:, :-1] & content[:, 1:]  # (B, L-1): position i and i+1 are both content
    has_pair = can.any(dim=1, keepdim=True)
    rows = coin(b, p, generator, ids.device).unsqueeze(1) & has_pair  # (B, 1)
    weights = can.float() + (~has_pair).float()  # rows with no pair get dummy weights
    i = torch.multinomial(weights, 1, generator=generator)  # (B, 1): swap i and i+1
    pos = torch.arange(n, device=ids.device).expand(b, n)
    src = torch.where(rows & (pos == i), pos + 1, torch.where(rows & (pos == i + 1), pos - 1, pos))
    return ids.gather(1, src)


@AUGMENTATIONS.register("text_default", modalities=(TEXT,))
class TextDefault(Augmentation):
    """Token-id views: deletion, adjacent swap, then masking, each with its own probability."""

    modality = TEXT

    def __init__(self, mask_p: float = 0.15, delete_p: float = 0.1, swap_p: float = 0.1, mask_id: int = MASK_ID):
        super().__init__()
        self.mask_p, self.delete_p, self.swap_p, self.mask_id = mask_p, delete_p, swap_p, mask_id

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x = delete_tokens(x, self.delete_p, generator)
        x = swap_tokens(x, self.swap_p, generator)
        return mask_tokens(x, self.mask_p, self.mask_id, generator)
