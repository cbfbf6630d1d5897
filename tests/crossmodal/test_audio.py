"""Audio encoders (shapes, tokens, any sample rate, SpecAugment) and batched waveform augmentations."""

import pytest
import torch

from mmssl.augment.audio import AudioDefault, add_noise, change_speed, random_gain, time_shift
from mmssl.errors import ConfigError, ShapeError
from mmssl.registry import AUGMENTATIONS, ENCODERS

TINY = {"audio_conv": dict(n_mels=16, width=4), "audio_transformer": dict(n_mels=16, dim=16, depth=1, heads=2)}


@pytest.mark.parametrize("name", list(TINY))
@pytest.mark.parametrize("sample_rate", [8000, 22050, 44100])
def test_encoder_shapes_at_any_sample_rate(name, sample_rate):
    enc = ENCODERS.build(name, sample_rate=sample_rate, **TINY[name]).eval()
    wave = torch.randn(3, sample_rate // 2)  # 0.5 s
    spec = enc.frontend(wave)
    assert spec.shape == (3, 16, enc.frames(wave.shape[1])) == (3, 16, 51)  # 10 ms hops at every rate
    assert torch.allclose(spec.mean(dim=(1, 2)), torch.zeros(3), atol=1e-4)  # standardised per clip
    out = enc(wave)
    assert out.pooled.shape == (3, enc.dim)
    assert out.tokens.ndim == 3 and out.tokens.shape[0] == 3 and out.tokens.shape[2] == enc.dim
    assert torch.equal(enc.encode_spectrogram(spec).pooled, out.pooled)  # encode = frontend + encode_spectrogram


@pytest.mark.parametrize("name", list(TINY))
def test_tokens_are_time_ordered(name):
    """Changing only the last 0.2 s of a clip leaves the early tokens' receptive field untouched."""
    torch.manual_seed(0)
    enc = ENCODERS.build(name, sample_rate=8000, **TINY[name]).eval()
    a = torch.randn(1, 8000)
    b = a.clone()
    b[:, -1600:] = torch.randn(1, 1600)
    ta, tb = enc.encode_spectrogram(enc.frontend(a)).tokens, enc.encode_spectrogram(enc.frontend(b)).tokens
    # the last tokens change far more than the first (per-clip standardisation moves all of them a little)
    assert (ta[0, -1] - tb[0, -1]).abs().sum() > (ta[0, 0] - tb[0, 0]).abs().sum()
    assert ta.shape[1] > 10 and not torch.allclose(ta[0, -1], tb[0, -1])


def test_frontend_ignores_loudness():
    enc = ENCODERS.build("audio_conv", sample_rate=8000, n_mels=16, width=4)
    wave = torch.randn(2, 4000)
    assert torch.allclose(enc.frontend(wave), enc.frontend(10 * wave), atol=1e-3)


def test_spec_augment_only_in_training():
    enc = ENCODERS.build("audio_conv", sample_rate=8000, n_mels=16, width=4, freq_mask=8, time_mask=20)
    wave = torch.randn(4, 8000)
    enc.eval()
    assert torch.equal(enc(wave).pooled, enc(wave).pooled)
    enc.train()
    torch.manual_seed(1)
    first = enc(wave).tokens
    torch.manual_seed(2)
    assert not torch.allclose(first, enc(wave).tokens)


def test_bad_inputs_and_configs():
    enc = ENCODERS.build("audio_conv", sample_rate=8000, n_mels=16, width=4)
    with pytest.raises(ShapeError, match=r"waveforms \(B, samples\)"):
        enc(torch.randn(2, 1, 8000))
    with pytest.raises(ConfigError, match="n_mels"):
        ENCODERS.build("audio_conv", sample_rate=8000, n_mels=200, win_ms=10.0)
    with pytest.raises(ConfigError, match="patch_mels"):
        ENCODERS.build("audio_transformer", n_mels=16, patch_mels=5)


def test_gain_shift_speed_on_hand_cases():
    x = torch.arange(1.0, 11.0).view(1, 10)
    assert torch.allclose(random_gain(x, (20.0, 20.0), p=1.0), 10 * x)
    assert torch.equal(random_gain(x, (20.0, 20.0), p=0.0), x)
    shifted = time_shift(x.repeat(50, 1), max_fraction=0.3, p=1.0, generator=torch.Generator().manual_seed(0))
    def moved(s):  # x moved right by s samples, zeros filling the gap
        src = torch.arange(10) - s
        return torch.where((src >= 0) & (src < 10), x[0][src.clamp(0, 9)], torch.zeros(()))

    found = {s for row in shifted for s in range(-3, 4) if torch.equal(row, moved(s))}
    assert len(found) > 3 and all(any(torch.equal(row, moved(s)) for s in found) for row in shifted)
    half = change_speed(x, (2.0, 2.0), p=1.0)  # twice as fast: sample t reads x[2t], zeros past the end
    assert torch.allclose(half[0, :5], x[0, ::2]) and torch.equal(half[0, 5:], torch.zeros(5))
    slow = change_speed(x, (0.5, 0.5), p=1.0)
    assert torch.allclose(slow[0, 2:], torch.tensor([2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5]))


def test_noise_has_the_requested_snr():
    x = torch.sin(torch.linspace(0, 400, 16000)).repeat(8, 1)
    noisy = add_noise(x, (10.0, 10.0), p=1.0, generator=torch.Generator().manual_seed(0))
    snr = 10 * torch.log10(x.pow(2).mean(1) / (noisy - x).pow(2).mean(1))
    assert torch.allclose(snr, torch.full((8,), 10.0), atol=0.2)


def test_audio_default_shape_and_seed_determinism():
    aug = AUGMENTATIONS.build("audio_default", speed_p=1.0, noise_p=1.0)
    assert isinstance(aug, AudioDefault)
    x = torch.randn(6, 4000)
    a = aug(x, generator=torch.Generator().manual_seed(3))
    b = aug(x, generator=torch.Generator().manual_seed(3))
    c = aug(x, generator=torch.Generator().manual_seed(4))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.allclose(a, c)
    same = aug(x[:1].repeat(4, 1), generator=torch.Generator().manual_seed(5))
    assert not torch.allclose(same[0], same[1])  # each clip draws its own parameters
