"""Text encoders over open_clip BPE ids and the batched token augmentations."""

import pytest
import torch
from safetensors.torch import save_file

from mmssl.augment.text import MASK_ID, content_mask, delete_tokens, mask_tokens, swap_tokens
from mmssl.data.tokenize import EOT_ID, PAD_ID, SOT_ID, VOCAB_SIZE, tokenize
from mmssl.errors import ShapeError
from mmssl.registry import AUGMENTATIONS, ENCODERS

TEXTS = ["seven", "a handwritten seven", "the number 7 is drawn here"]
TINY_CLIP = dict(config=dict(context_length=16, width=32, heads=2, layers=1), embed_dim=24)


@pytest.fixture(scope="module")
def ids():
    return tokenize(TEXTS, context_length=16)


def test_tokenize_layout(ids):
    assert ids.shape == (3, 16) and ids.dtype == torch.int64
    assert (ids[:, 0] == SOT_ID).all() and ids.max() < VOCAB_SIZE
    assert [int((row == EOT_ID).nonzero()) for row in ids] == [2, 4, 7]


@pytest.mark.parametrize("name,kwargs", [("text_transformer", dict(dim=32, depth=1, heads=2, context_length=16)),
                                         ("open_clip_text", TINY_CLIP)])
def test_text_encoder_shapes(ids, name, kwargs):
    enc = ENCODERS.build(name, **kwargs).eval()
    out = enc(ids)
    assert out.pooled.shape == (3, enc.dim) and out.tokens.shape == (3, 16, enc.dim)
    short = enc(ids[:, :10])  # shorter sequences work too
    assert short.tokens.shape == (3, 10, enc.dim)
    assert torch.allclose(short.pooled, out.pooled, atol=1e-5)  # the cut positions were padding


def test_text_transformer_ignores_padding(ids):
    enc = ENCODERS.build("text_transformer", dim=32, depth=2, heads=2, context_length=32).eval()
    longer = torch.nn.functional.pad(ids, (0, 16), value=PAD_ID)
    assert torch.allclose(enc(ids).pooled, enc(longer).pooled, atol=1e-5)
    assert enc.token_embedding.num_embeddings == VOCAB_SIZE


def test_open_clip_text_loads_local_weights(ids, tmp_path):
    torch.manual_seed(0)
    a = ENCODERS.build("open_clip_text", **TINY_CLIP).eval()
    path = tmp_path / "text.safetensors"
    save_file({k: v.contiguous() for k, v in a.text.state_dict().items()}, str(path))
    torch.manual_seed(1)
    b = ENCODERS.build("open_clip_text", weights=str(path), **TINY_CLIP).eval()
    assert torch.allclose(a(ids).pooled, b(ids).pooled)


def test_text_encoder_bad_inputs(ids):
    enc = ENCODERS.build("text_transformer", dim=16, depth=1, heads=2, context_length=8)
    with pytest.raises(ShapeError, match="at most 8 tokens"):
        enc(ids)
    with pytest.raises(ShapeError, match="integer token ids"):
        enc(ids[:, :8].float())


def _specials_intact(before, after):
    for row_b, row_a in zip(before, after):
        n_b, n_a = int(content_mask(row_b[None]).sum()), int(content_mask(row_a[None]).sum())
        assert row_a[0] == SOT_ID and row_a[n_a + 1] == EOT_ID and (row_a[n_a + 2:] == PAD_ID).all()
        assert 1 <= n_a <= n_b


def test_text_ops_keep_specials_and_padding(ids):
    g = torch.Generator().manual_seed(0)
    masked = mask_tokens(ids, p=1.0, generator=g)
    assert torch.equal(masked[content_mask(ids)], torch.full((int(content_mask(ids).sum()),), MASK_ID))
    assert torch.equal(masked[~content_mask(ids)], ids[~content_mask(ids)])
    _specials_intact(ids, masked)
    deleted = delete_tokens(ids, p=0.5, generator=g)
    _specials_intact(ids, deleted)
    all_gone = delete_tokens(ids, p=1.0, generator=g)
    assert torch.equal(all_gone, ids)  # a text never loses all of its content
    swapped = swap_tokens(ids, p=1.0, generator=g)
    _specials_intact(ids, swapped)
    assert torch.equal(swapped[0], ids[0])  # one word: nothing to swap
    for row_s, row_i in zip(swapped[1:], ids[1:]):
        diff = (row_s != row_i).nonzero().flatten()
        assert len(diff) == 2 and diff[1] == diff[0] + 1 and row_s[diff[0]] == row_i[diff[1]]
    assert torch.equal(delete_tokens(ids, p=0.0), ids) and torch.equal(swap_tokens(ids, p=0.0), ids)


def test_text_default_determinism(ids):
    aug = AUGMENTATIONS.build("text_default", mask_p=0.3, delete_p=0.3, swap_p=0.5)
    batch = ids.repeat(8, 1)
    a = aug(batch, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, aug(batch, generator=torch.Generator().manual_seed(0)))
    assert a.shape == batch.shape and not torch.equal(a, batch)
    _specials_intact(batch, a)
