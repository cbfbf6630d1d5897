"""Text → open_clip BPE token ids: the one tokenizer of datasets, text encoders, text augmentations and envs.

``tokenize`` is open_clip's ``SimpleTokenizer`` (its BPE vocabulary ships with open_clip): start token
49406, end token 49407, padding 0, vocabulary 49408; a text longer than ``context_length`` is cut and
keeps its end token.
"""

from __future__ import annotations

from functools import lru_cache

import torch

VOCAB_SIZE = 49408
SOT_ID, EOT_ID, PAD_ID = 49406, 49407, 0


@lru_cache(maxsize=8)
def _tokenizer(context_length: int):
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(context_length=context_length)  # reads the BPE vocabulary shipped with open_clip once


def tokenize(texts: list[str], context_length: int = 16) -> torch.Tensor:
    """Strings → (N, context_length) int64 ids with open_clip's BPE tokenizer (truncated texts keep their end token)."""
    return _tokenizer(context_length)(list(texts))
