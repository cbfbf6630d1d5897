"""random_shift / random_crop: shapes, dtypes, exact integer shifts, seeded determinism."""

import pytest
import torch
import torch.nn.functional as F

from mmssl.errors import ShapeError
from mmssl.registry import AUGMENTATIONS


def test_random_shift_is_a_replicate_padded_integer_shift():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6)
    out = AUGMENTATIONS.build("random_shift", pad=1)(x)
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
    for b in range(2):
        crops = [padded[b, :, i:i + 6, j:j + 6] for i in range(3) for j in range(3)]
        assert any(torch.equal(out[b], c) for c in crops)


def test_random_shift_keeps_uint8_and_shape_and_is_seeded():
    x = torch.randint(0, 256, (5, 3, 12, 12), dtype=torch.uint8)
    shift = AUGMENTATIONS.build("random_shift", pad=2)
    a = shift(x, generator=torch.Generator().manual_seed(3))
    b = shift(x, generator=torch.Generator().manual_seed(3))
    assert a.dtype == torch.uint8 and a.shape == x.shape and torch.equal(a, b)
    assert not torch.equal(shift(x, generator=torch.Generator().manual_seed(4)), a) or torch.equal(a, x)


def test_random_shift_channels_last_and_errors():
    x = torch.rand(2, 8, 8, 3)
    assert AUGMENTATIONS.build("random_shift", channels_last=True)(x).shape == x.shape
    with pytest.raises(ShapeError, match="gaussian_noise"):
        AUGMENTATIONS.build("random_shift")(torch.rand(4, 5))


def test_random_crop_size_and_content():
    x = torch.arange(36.0).view(1, 1, 6, 6).expand(3, 1, 6, 6).contiguous()
    out = AUGMENTATIONS.build("random_crop", size=4)(x)
    assert out.shape == (3, 1, 4, 4)
    for b in range(3):  # a contiguous window: rows differ by 6, columns by 1
        assert torch.equal(out[b, 0, 1:] - out[b, 0, :-1], torch.full((3, 4), 6.0))
        assert torch.equal(out[b, 0, :, 1:] - out[b, 0, :, :-1], torch.ones(4, 3))
    with pytest.raises(ShapeError):
        AUGMENTATIONS.build("random_crop", size=8)(x)
