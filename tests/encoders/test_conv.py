"""LiveTapConv2d computes the same convolution as nn.Conv2d, without the taps that read only padding."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn

from mmssl.encoders.conv import LiveTapConv2d, _Crop, _Dense, _dim_plan, crop_dead_taps
from mmssl.registry import ENCODERS


def _pair(conv: nn.Conv2d, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(output, weight grad) of ``conv`` and of its live-tap copy on ``x`` (an arbitrary upstream gradient)."""
    cropped = crop_dead_taps(copy.deepcopy(conv))
    outs, grads = [], []
    for module in (conv, cropped):
        out = module(x)
        out.backward(torch.linspace(-1, 1, out.numel()).view_as(out))
        outs.append(out)
        grads.append(module.weight.grad)
    return outs[0], outs[1], grads[0], grads[1]


@settings(max_examples=60, deadline=None, derandomize=True, database=None)  # seeded, nothing written
@given(size=st.integers(1, 5), kernel=st.sampled_from([1, 2, 3, 5, 7]), stride=st.integers(1, 3),
       padding=st.integers(0, 3), width=st.integers(1, 5), channels_last=st.booleans())
def test_same_output_and_weight_gradient_as_conv2d(size: int, kernel: int, stride: int, padding: int, width: int,
                                                   channels_last: bool):
    assume(min(size, width) + 2 * padding >= kernel)  # else no output: nn.Conv2d refuses it too
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, kernel, stride=stride, padding=padding, bias=True)
    x = torch.randn(2, 3, size, width)
    if channels_last:
        conv, x = conv.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    out, cropped, grad, cropped_grad = _pair(conv, x)
    assert cropped.shape == out.shape
    torch.testing.assert_close(cropped, out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cropped_grad, grad, rtol=1e-5, atol=1e-5)


def test_plans_by_map_size():
    assert _dim_plan(1, 3, 1, 1) == (1, 1, 0)  # a 3×3 on one row: only the middle row of taps reads input
    assert _dim_plan(2, 3, 2, 1) == (1, 2, 0)  # layer4's stride-2 entry on 2×2 maps: the lower-right 2×2
    assert _dim_plan(8, 3, 1, 1) == (0, 2, 1)  # every tap live
    conv = crop_dead_taps(nn.Conv2d(8, 8, 3, padding=1, bias=False))
    assert isinstance(conv, LiveTapConv2d)
    assert isinstance(conv._plan(1, 1), _Dense) and isinstance(conv._plan(2, 2), _Dense)  # ≤ 9 pixels: a matmul
    assert isinstance(conv._plan(1, 40), _Crop) and conv._plan(1, 40).rows == slice(1, 2)  # a 1×3 kernel
    assert conv._plan(8, 8) is None  # the ordinary convolution
    assert crop_dead_taps(nn.Conv2d(8, 8, 3, padding=1, groups=2))._plan(2, 2) is None  # grouped: not unrolled


def test_channels_last_input_keeps_channels_last_output():
    conv = crop_dead_taps(nn.Conv2d(4, 6, 3, padding=1)).to(memory_format=torch.channels_last)
    out = conv(torch.randn(2, 4, 2, 2).contiguous(memory_format=torch.channels_last))
    assert out.shape == (2, 6, 2, 2) and out.is_contiguous(memory_format=torch.channels_last)
    assert conv(torch.randn(2, 4, 2, 2)).is_contiguous()


def test_dead_tap_gradients_stay_exactly_zero():
    conv = crop_dead_taps(nn.Conv2d(4, 4, 3, padding=1, bias=False))
    conv(torch.randn(3, 4, 1, 1)).square().sum().backward()
    grad = conv.weight.grad
    assert grad[:, :, 1, 1].abs().sum() > 0
    grad[:, :, 1, 1] = 0
    assert torch.count_nonzero(grad) == 0


def test_channels_last_and_bf16_autocast_match():
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 32, 3, stride=2, padding=1).to(memory_format=torch.channels_last)
    x = torch.randn(4, 16, 2, 2).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, cropped, _, _ = _pair(conv, x)
    assert cropped.dtype == out.dtype == torch.bfloat16
    torch.testing.assert_close(cropped.float(), out.float(), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("cifar_stem", [False, True])
def test_resnet18_is_torchvision_resnet18(cifar_stem: bool):
    """The encoder's network is torchvision's, same state_dict keys and the same features at 32×32."""
    torch.manual_seed(0)
    encoder = ENCODERS.build("resnet18", cifar_stem=cifar_stem).eval()
    reference = torchvision.models.resnet18(weights=None)
    if cifar_stem:
        reference.conv1, reference.maxpool = nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.Identity()
    reference.fc = nn.Identity()
    reference.load_state_dict(encoder.net.state_dict())
    reference.eval()
    lives = [m for m in encoder.net.modules() if isinstance(m, LiveTapConv2d)]
    assert len(lives) == sum(isinstance(m, nn.Conv2d) for m in reference.modules())
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(encoder(x).pooled, reference(encoder.normalise(x)), rtol=1e-4, atol=1e-5)
