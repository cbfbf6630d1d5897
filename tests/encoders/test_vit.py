"""The ViT encoder and the patch protocol (embed / transform) it shares with the audio transformer."""

import math

import pytest
import torch

from mmssl.encoders.audio import sinusoidal_positions
from mmssl.encoders.vit import sincos_2d
from mmssl.errors import ConfigError, ShapeError
from mmssl.registry import ENCODERS


def test_vit_shapes_and_encode_is_embed_then_transform():
    vit = ENCODERS.build("vit", width=16, depth=2, heads=2)
    x = torch.rand(3, 1, 8, 8)
    out = vit(x)
    assert out.tokens.shape == (3, 16, 16) and out.pooled.shape == (3, 16)
    e = vit.embed(x)
    assert e.grid == (4, 4) and e.pos.shape == (1, 16, 16) and e.patches.shape == (3, 16, vit.patch_dim) == (3, 16, 4)
    assert torch.allclose(vit.transform(e.tokens + e.pos), out.tokens)
    assert torch.allclose(out.pooled, out.tokens.mean(1))


def test_vit_patches_are_the_normalised_pixels_row_major():
    vit = ENCODERS.build("vit", in_channels=3, width=16, depth=1, heads=2, image_size=8, patch_size=4)
    x = torch.rand(2, 3, 8, 8)
    e = vit.embed(x)
    xn = (x - vit.mean) / vit.std
    # patch 1 is the top-right 4×4 block; values in (row, col, channel) order
    expected = xn[1, :, 0:4, 4:8].permute(1, 2, 0).reshape(-1)
    assert torch.allclose(e.patches[1, 1], expected)
    # the token of that patch is the conv of that block alone
    token = (vit.patch_embed.weight * xn[1, :, 0:4, 4:8]).sum(dim=(1, 2, 3)) + vit.patch_embed.bias
    assert torch.allclose(e.tokens[1, 1], token, atol=1e-5)


def test_sincos_2d_positions():
    pos = sincos_2d(2, 3, 8)  # (6, 8): first half encodes the column, second half the row
    assert pos.shape == (6, 8)
    assert torch.allclose(pos[0], torch.tensor([0, 0, 1, 1, 0, 0, 1, 1.0]))
    r, c = 1, 2
    row = pos[r * 3 + c]
    assert math.isclose(row[0].item(), math.sin(c), abs_tol=1e-6) and math.isclose(row[4].item(), math.sin(r), abs_tol=1e-6)
    assert math.isclose(row[1].item(), math.sin(c / 100), abs_tol=1e-6)  # ω = 1/10000^(1/2) for the 2nd frequency
    assert torch.equal(pos[0 * 3 + 2, :4], pos[1 * 3 + 2, :4])  # same column → same first half
    with pytest.raises(ConfigError, match="divisible by 4"):
        sincos_2d(2, 2, 6)


def test_vit_sizes():
    vit = ENCODERS.build("vit", width=16, depth=1, heads=2, image_size=None, patch_size=2)
    assert vit(torch.rand(2, 1, 12, 8)).tokens.shape == (2, 24, 16)  # any size the patch divides
    with pytest.raises(ShapeError, match="patch_size=2"):
        vit(torch.rand(2, 1, 9, 9))
    resized = ENCODERS.build("vit", width=16, depth=1, heads=2, image_size=8, patch_size=2)
    assert resized(torch.rand(2, 1, 16, 16)).tokens.shape == (2, 16, 16)
    with pytest.raises(ConfigError, match="must divide"):
        ENCODERS.build("vit", image_size=8, patch_size=3)
    with pytest.raises(ConfigError, match="divisible by heads"):
        ENCODERS.build("vit", width=30, heads=4)
    with pytest.raises(ShapeError):
        resized(torch.rand(2, 3, 8, 8))


def test_transform_on_a_subset_ignores_the_dropped_patches():
    vit = ENCODERS.build("vit", width=16, depth=2, heads=2)
    x = torch.rand(2, 1, 8, 8)
    keep = torch.tensor([[0, 5, 10, 15], [1, 2, 3, 4]])
    y = x.clone()
    y[0, :, 2:4, 0:2] = 0.0  # patch 4 of image 0 (not kept) changes; patch 4 of image 1 is kept there
    def visible(img):
        e = vit.embed(img)
        return vit.transform(torch.gather(e.tokens + e.pos, 1, keep[..., None].expand(-1, -1, 16)))
    a, b = visible(x), visible(y)
    assert torch.allclose(a[0], b[0]) and torch.allclose(a[1], b[1])


def test_audio_transformer_patch_protocol():
    enc = ENCODERS.build("audio_transformer", sample_rate=8000, n_mels=16, dim=16, depth=1, heads=2,
                         patch_frames=4, patch_mels=8)
    spec = torch.randn(2, 16, 10)  # 10 frames → padded to 12 → 3 steps × 2 bands
    e = enc.embed_spectrogram(spec)
    assert e.grid == (3, 2) and e.tokens.shape == (2, 6, 16) and e.patches.shape == (2, 6, enc.patch_dim) == (2, 6, 32)
    # token (t=1, f=1) is index 1·2+1 = 3 and covers mels 8..15, frames 4..7
    assert torch.allclose(e.patches[0, 3], spec[0, 8:16, 4:8].reshape(-1))
    padded = torch.nn.functional.pad(spec, (0, 2))
    assert torch.allclose(e.patches[1, 5], padded[1, 8:16, 8:12].reshape(-1))  # the zero-padded last step
    expected_pos = enc.band[1] + sinusoidal_positions(3, 16)[1]
    assert torch.allclose(e.pos[0, 3], expected_pos)
    out = enc.encode_spectrogram(spec)
    assert torch.allclose(out.tokens, enc.transform(e.tokens + e.pos))
    wave = 0.1 * torch.randn(2, 800)
    assert enc.embed(wave).tokens.shape[1] == 2 * math.ceil(enc.frames(800) / 4)


def test_open_clip_vision_patch_protocol():
    enc = ENCODERS.build("open_clip_vision", in_channels=1, embed_dim=24,
                         config={"image_size": 8, "patch_size": 2, "width": 16, "layers": 2, "head_width": 8}).eval()
    x = torch.rand(2, 1, 8, 8)
    e = enc.embed(x)
    assert e.grid == (4, 4) and e.tokens.shape == (2, 16, 16) and enc.token_width == 16
    assert e.patches.shape == (2, 16, enc.patch_dim) == (2, 16, 12)  # grey repeated to RGB, then normalised
    assert torch.allclose(enc.transform(e.tokens + e.pos), enc(x).tokens, atol=1e-6)
    keep = enc.transform((e.tokens + e.pos)[:, :5])  # any subset of the patches
    assert keep.shape == (2, 5, 24)
    pooled_tower = ENCODERS.build("open_clip_vision", in_channels=1, embed_dim=24,
                                  config={"image_size": 8, "patch_size": 2, "width": 16, "layers": 1,
                                          "head_width": 8, "attentional_pool": True})
    with pytest.raises(ConfigError, match="plain ViT"):
        _ = pooled_tower.patch_dim
