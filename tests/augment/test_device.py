"""Augmentations run on whatever device the batch is on, by one code path (issue 26, item 3).

On a CPU-only machine the device-generic code is checked on PyTorch's ``meta`` device: a meta tensor
has a shape and a device but no data, so any host round trip (``.cpu()``, ``.numpy()``, ``.item()``,
``.tolist()``, a Python ``if`` on a tensor) or a constant left on another device raises. Seeded views
use generators created on the batch's device; with CUDA present the CPU and CUDA outputs are compared
in distribution.
"""

import pytest
import torch

import mmssl.augment  # noqa: F401  (registers)
from mmssl.data.tokenize import EOT_ID, SOT_ID
from mmssl.registry import AUGMENTATIONS

#: options that switch on every random branch of an augmentation
OPTIONS = {"simclr": {"blur_p": 0.5, "noise_std": 0.05, "degrees": 10.0}, "random_crop": {"size": 12},
           "gaussian_noise": {"std": 0.1, "clamp": [0.0, 1.0]}}


def batch_for(name: str, n: int = 8, device="cpu", seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if name == "audio_default":
        x = torch.sin(torch.arange(800) / 5.0).repeat(n, 1) + 0.1 * torch.randn(n, 800, generator=g)
    elif name == "text_default":
        x = torch.zeros(n, 12, dtype=torch.long)
        x[:, 0], x[:, 1:8], x[:, 8] = SOT_ID, torch.randint(300, 4000, (n, 7), generator=g), EOT_ID
    else:
        x = torch.rand(n, 3, 16, 16, generator=g)
    return x.to(device)


def build(name: str):
    return AUGMENTATIONS.build(name, **OPTIONS.get(name, {}))


NAMES = AUGMENTATIONS.names()


def test_every_augmentation_is_covered():
    assert {"simclr", "audio_default", "text_default", "gaussian_noise", "random_shift", "random_crop"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_runs_on_the_meta_device_without_host_round_trips(name):
    x = batch_for(name).to("meta")
    y = build(name)(x)
    assert y.device.type == "meta" and y.shape[0] == x.shape[0] and y.dtype == x.dtype


@pytest.mark.parametrize("name", NAMES)
def test_generator_on_the_batch_device_makes_reproducible_views(name):
    x = batch_for(name)
    aug = build(name)
    make = lambda s: torch.Generator(device=x.device).manual_seed(s)  # noqa: E731
    a, b, c = aug(x, generator=make(1)), aug(x, generator=make(1)), aug(x, generator=make(2))
    assert a.device == x.device and torch.equal(a, b)
    if name != "identity":
        assert not torch.equal(a, c)


@pytest.mark.parametrize("name", NAMES)
def test_default_generator_path_is_the_seeded_generator_path(name):
    """``generator=None`` draws from the device's default generator: the same ops and draws as an explicit one."""
    x = batch_for(name)
    aug = build(name)
    torch.manual_seed(5)
    implicit = aug(x)
    explicit = aug(x, generator=torch.Generator(device=x.device).manual_seed(5))
    assert torch.equal(implicit, explicit)


def _moments(name: str, device: str, draws: int = 40) -> torch.Tensor:
    aug, x = build(name), batch_for(name, n=64, device=device)
    g = torch.Generator(device=device).manual_seed(0)
    ys = torch.stack([aug(x, generator=g).double() for _ in range(draws)])
    return torch.stack([ys.mean(), ys.std()]).cpu()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (CPU path checked on the meta device)")
@pytest.mark.parametrize("name", [n for n in NAMES if n != "text_default"])
def test_cpu_and_cuda_give_the_same_distribution(name):
    cpu, cuda = _moments(name, "cpu"), _moments(name, "cuda")
    assert torch.allclose(cpu, cuda, rtol=0.02, atol=0.01), (cpu, cuda)


def test_text_views_change_most_rows_and_keep_the_start_token():
    """The branch-free swap still swaps: with all three ops on, most rows change but not every one."""
    x = batch_for("text_default", n=256)
    y = build("text_default")(x, generator=torch.Generator(device=x.device).manual_seed(0))
    changed = (y != x).any(dim=1).float().mean()
    assert 0.2 < changed < 0.95  # mask 0.15 per token, delete 0.1, swap 0.1 per row: most rows change, not all
    assert torch.equal(y[:, 0], x[:, 0])  # start tokens stay
