"""Text encoders over open_clip BPE token ids (B, L): an open_clip text tower and a small bidirectional transformer.

Token ids come from ``mmssl.data.tokenize.tokenize`` (open_clip's ``SimpleTokenizer``: start token 49406,
end token 49407, padding 0, vocabulary 49408). Both encoders return pooled (B, dim) and
per-position tokens (B, L, dim).
"""

from __future__ import annotations

import torch
from torch import nn

from mmssl.data.tokenize import PAD_ID, VOCAB_SIZE
from mmssl.encoders.base import Encoder, open_clip_config
from mmssl.errors import ConfigError, ShapeError
from mmssl.registry import ENCODERS
from mmssl.types import TEXT, EncoderOutput


class _TextEncoder(Encoder):
    modality = TEXT
    context_length = 77

    def check_input(self, x: torch.Tensor) -> None:
        self.expect(x, 2, "token ids (B, L)")
        if x.is_floating_point():
            raise ShapeError(f"{type(self).__name__} expects integer token ids, got {x.dtype}; tokenize the text "
                             "with mmssl.data.tokenize.tokenize")
        if x.shape[1] > self.context_length:
            raise ShapeError(f"{type(self).__name__} reads at most {self.context_length} tokens, got {x.shape[1]}; "
                             "raise context_length or tokenize shorter")


@ENCODERS.register("text_transformer", modalities=(TEXT,))
class TextTransformer(_TextEncoder):
    """Small bidirectional pre-norm transformer over BPE ids with learned positions and a padding mask.

    Padding (id 0) is masked out of attention and out of the pooled mean. tokens: (B, L, dim) after the
    final LayerNorm; pooled: the mean over non-padding positions (B, dim).
    """

    def __init__(self, dim: int = 128, depth: int = 2, heads: int = 4, context_length: int = 77,
                 mlp_ratio: float = 4.0, dropout: float = 0.0, vocab_size: int = VOCAB_SIZE):
        super().__init__()
        if dim % heads:
            raise ConfigError(f"text_transformer: dim={dim} must be divisible by heads={heads}")
        self.token_embedding = nn.Embedding(vocab_size, dim)
        self.positional_embedding = nn.Parameter(torch.randn(context_length, dim) * 0.01)
        layer = nn.TransformerEncoderLayer(dim, heads, int(dim * mlp_ratio), dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        self.dim, self.context_length = dim, context_length

    def encode(self, ids: torch.Tensor) -> EncoderOutput:
        pad = ids == PAD_ID
        x = self.token_embedding(ids) + self.positional_embedding[: ids.shape[1]]
        tokens = self.norm(self.blocks(x, src_key_padding_mask=pad))
        keep = (~pad).unsqueeze(-1).to(tokens.dtype)
        pooled = (tokens * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1)
        return EncoderOutput(pooled=pooled, tokens=tokens)


@ENCODERS.register("open_clip_text", modalities=(TEXT,))
class OpenCLIPText(_TextEncoder):
    """An open_clip text tower by architecture name (``arch="ViT-B-32"``) or a small custom ``CLIPTextCfg``.

    ``config`` (used when ``arch`` is None) is a ``CLIPTextCfg`` dict, e.g. ``{context_length: 16,
    width: 128, heads: 4, layers: 2}``; ``embed_dim`` is the pooled size. Causal attention and
    end-token pooling as in CLIP. Weights come only from a local file (a whole CLIP checkpoint or the
    text tower alone). tokens: per-position features mapped through the text projection, (B, L, dim).
    """

    def __init__(self, arch: str | None = None, config: dict | None = None, embed_dim: int = 128,
                 weights: str | None = None):
        super().__init__()
        from open_clip.model import CLIPTextCfg, _build_text_tower

        if arch is not None:
            model_cfg = open_clip_config(arch)
            embed_dim, text_cfg = model_cfg["embed_dim"], model_cfg["text_cfg"]
        else:
            text_cfg = dict(context_length=77, width=128, heads=4, layers=2) | dict(config or {})
        try:
            cfg = CLIPTextCfg(**text_cfg)
        except TypeError as exc:
            raise ConfigError(f"bad open_clip text config {text_cfg}: {exc}") from None
        if cfg.hf_model_name:
            raise ConfigError(f"open_clip_text builds CLIP-style towers only; {arch!r} uses a Hugging Face text model")
        self.text = _build_text_tower(embed_dim, cfg)
        if weights:
            self._load(weights)
        self.text.output_tokens = True
        self.dim, self.context_length = embed_dim, cfg.context_length

    def _load(self, weights: str) -> None:
        from mmssl.checkpoint import load_matching
        from mmssl.encoders.vision import _load_local_weights

        state = _load_local_weights(weights)
        if "token_embedding.weight" in state and "visual.conv1.weight" in state:  # a whole CLIP: drop the image tower
            state = {k: v for k, v in state.items() if not k.startswith("visual.") and k != "logit_scale"}
        state = {k.removeprefix("text."): v for k, v in state.items()}
        load_matching(self.text, state, what=f"open_clip text weights {weights}")

    def encode(self, ids: torch.Tensor) -> EncoderOutput:
        length = ids.shape[1]
        # open_clip's causal mask is built for context_length; pad up to it and cut the tokens back
        pooled, tokens = self.text(nn.functional.pad(ids, (0, self.context_length - length), value=PAD_ID))
        tokens = tokens[:, :length]
        proj = self.text.text_projection
        if isinstance(proj, nn.Linear):
            tokens = proj(tokens)
        elif proj is not None:
            tokens = tokens @ proj
        return EncoderOutput(pooled=pooled, tokens=tokens)
