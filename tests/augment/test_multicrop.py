"""Multi-crop as an option of the image augmentation: 2 global + N local views, usable by any objective."""

import pytest
import torch

from mmssl.errors import ConfigError
from mmssl.registry import AUGMENTATIONS


def test_views_are_global_then_local_with_their_sizes():
    aug = AUGMENTATIONS.build("simclr", local_crops=3, local_size=4)
    x = torch.rand(5, 1, 8, 8)
    views = aug.views(x, 2, generator=torch.Generator().manual_seed(0))
    assert [tuple(v.shape) for v in views] == [(5, 1, 8, 8)] * 2 + [(5, 1, 4, 4)] * 3
    assert not torch.equal(views[0], views[1]) and not torch.equal(views[2], views[3])
    again = aug.views(x, 2, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(views, again))  # seeded: reproducible
    assert all(0 <= v.min() and v.max() <= 1 for v in views)


def test_default_local_size_is_the_official_ratio():
    aug = AUGMENTATIONS.build("simclr", local_crops=1, size=32)
    assert aug.views(torch.rand(2, 3, 48, 48), 2)[-1].shape[-1] == round(32 * 96 / 224)  # 14


def test_local_views_cover_a_small_part_of_the_image():
    # a left-to-right ramp: a full-image view spans it, a 5 %-area local crop spans a small range of it
    x = torch.linspace(0, 1, 32).view(1, 1, 1, 32).expand(64, 1, 32, 32).contiguous()
    aug = AUGMENTATIONS.build("simclr", local_crops=1, local_size=8, local_crop_scale=(0.05, 0.05), crop_scale=(1.0, 1.0),
                              flip_p=0.0, jitter=0.0, grayscale_p=0.0)
    global_view, _, local_view = aug.views(x, 2)
    span = lambda v: (v.amax(dim=(1, 2, 3)) - v.amin(dim=(1, 2, 3))).mean()  # noqa: E731
    assert span(global_view) > 0.9 and span(local_view) < 0.4


def test_the_option_leaves_the_two_view_path_unchanged():
    x = torch.rand(4, 1, 8, 8)
    plain, multi = AUGMENTATIONS.build("simclr"), AUGMENTATIONS.build("simclr", local_crops=6)
    assert torch.equal(plain(x, torch.Generator().manual_seed(3)), multi(x, torch.Generator().manual_seed(3)))


@pytest.mark.parametrize("name", ["gaussian_noise", "random_shift", "identity"])
def test_other_augmentations_make_global_views_only(name):
    x = torch.rand(3, 1, 8, 8)
    assert len(AUGMENTATIONS.build(name).views(x, 2)) == 2


@pytest.mark.parametrize("bad", [dict(local_crops=-1), dict(local_size=0), dict(local_crop_scale=(0.5, 0.2))])
def test_bad_options(bad):
    with pytest.raises(ConfigError, match="local"):
        AUGMENTATIONS.build("simclr", **bad)
