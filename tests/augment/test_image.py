import torch

from mmssl.augment.image import gaussian_blur, grayscale, random_resized_crop
from mmssl.registry import AUGMENTATIONS


def test_simclr_views_deterministic_under_seed_and_distinct_per_sample():
    aug = AUGMENTATIONS.build("simclr", blur_p=0.5, noise_std=0.01)
    x = torch.rand(1, 3, 16, 16).expand(8, -1, -1, -1).contiguous()
    a = aug(x, generator=torch.Generator().manual_seed(1))
    b = aug(x, generator=torch.Generator().manual_seed(1))
    c = aug(x, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert not torch.allclose(a[0], a[1])  # identical inputs, independent per-sample views
    torch.manual_seed(5)
    d = aug(x)
    torch.manual_seed(5)
    assert torch.equal(d, aug(x))  # the global RNG works the same way


def test_full_crop_is_identity():
    x = torch.rand(2, 1, 8, 8)
    y = random_resized_crop(x, (8, 8), scale=(1.0, 1.0), ratio=(1.0, 1.0))
    assert torch.allclose(x, y, atol=1e-5)


def test_flip_and_resize():
    x = torch.arange(16.0).view(1, 1, 4, 4).repeat(2, 1, 1, 1)
    y = random_resized_crop(x, (4, 4), scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=1.0)
    assert torch.allclose(y, x.flip(-1), atol=1e-4)
    assert random_resized_crop(x, (6, 6)).shape == (2, 1, 6, 6)


def test_blur_preserves_constant_images_and_smooths():
    x = torch.full((2, 3, 12, 12), 0.3)
    assert torch.allclose(gaussian_blur(x, (1.0, 1.0), p=1.0), x, atol=1e-6)
    spike = torch.zeros(1, 1, 12, 12)
    spike[..., 6, 6] = 1
    out = gaussian_blur(spike, (1.5, 1.5), p=1.0)
    assert out[..., 6, 6] < 0.5 and abs(out.sum() - 1) < 1e-4


def test_grayscale_is_itu_601_luma_for_rgb_and_the_mean_otherwise():
    rgb = torch.zeros(1, 3, 1, 2)
    rgb[0, :, 0, 0] = torch.tensor([1.0, 0.0, 0.0])
    rgb[0, :, 0, 1] = torch.tensor([0.2, 0.4, 0.6])
    assert torch.allclose(grayscale(rgb).flatten(), torch.tensor([0.299, 0.299 * 0.2 + 0.587 * 0.4 + 0.114 * 0.6]))
    one = torch.rand(2, 1, 3, 3)
    assert grayscale(one) is one
    four = torch.arange(4.0).view(1, 4, 1, 1)
    assert grayscale(four).item() == 1.5
