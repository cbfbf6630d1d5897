"""Tiny encoders for every modality (the audio one implements the frontend/encode_spectrogram protocol) and batches."""

from __future__ import annotations

import torch
import torchaudio
from torch import nn

from mmssl.encoders.base import Encoder
from mmssl.registry import ENCODERS
from mmssl.types import Batch, EncoderOutput

OBS_DIM, TEXT_VOCAB, TEXT_LEN, AUDIO_SAMPLES, IMAGE_SIZE = 6, 64, 12, 2000, 8
#: per-modality augmentation for tests (text ids take no noise)
TEST_AUGMENT = {"image": "gaussian_noise", "obs": "gaussian_noise", "audio": "gaussian_noise", "text": "identity"}


class TinyObs(Encoder):
    """Vector observations (B, obs_dim) → MLP (no BatchNorm, so ranks and batch sizes do not interact)."""

    modality = "obs"

    def __init__(self, obs_dim: int = OBS_DIM, dim: int = 16):
        super().__init__()
        self.obs_dim, self.dim = obs_dim, dim
        self.net = nn.Sequential(nn.Linear(obs_dim, 32), nn.Tanh(), nn.Linear(32, dim))

    def check_input(self, x):
        self.expect(x, 2, f"observations (B, {self.obs_dim})")

    def encode(self, x):
        return EncoderOutput(pooled=self.net(x))


class TinyText(Encoder):
    """Token ids (B, L) → embedding + convolution → per-position tokens (B, L, D), mean-pooled."""

    modality = "text"

    def __init__(self, vocab: int = TEXT_VOCAB, dim: int = 16):
        super().__init__()
        self.dim = dim
        self.embed = nn.Embedding(vocab, dim)
        self.conv = nn.Conv1d(dim, dim, 3, padding=1)

    def encode(self, x):
        tokens = torch.relu(self.conv(self.embed(x).transpose(1, 2))).transpose(1, 2)
        return EncoderOutput(pooled=tokens.mean(1), tokens=tokens)


class TinyAudio(Encoder):
    """Waveforms (B, samples) → log-mel (B, 16, frames) → strided conv → time-ordered tokens (B, frames/2, D)."""

    modality = "audio"
    sample_rate = 8000

    def __init__(self, dim: int = 16):
        super().__init__()
        self.dim = dim
        self.mel = torchaudio.transforms.MelSpectrogram(sample_rate=8000, n_fft=128, hop_length=64, n_mels=16)
        self.conv = nn.Conv1d(16, dim, 3, stride=2, padding=1)

    def frontend(self, wave):
        return torch.log(self.mel(wave) + 1e-6)

    def encode_spectrogram(self, spec):
        tokens = torch.relu(self.conv(spec)).transpose(1, 2)
        return EncoderOutput(pooled=tokens.mean(1), tokens=tokens)

    def encode(self, x):
        return self.encode_spectrogram(self.frontend(x))


def make_encoders(modality: str, channels: int = 1) -> nn.ModuleDict:
    """``{modality: tiny encoder}``; images use the registered conv net at width 4 (2×2 token grid on 8×8)."""
    build = {"image": lambda: ENCODERS.build("convnet", in_channels=channels, width=4), "obs": TinyObs,
             "text": TinyText, "audio": TinyAudio}
    return nn.ModuleDict({modality: build[modality]()})


def make_data(modality: str, b: int, steps: int | None = None, channels: int = 1) -> torch.Tensor:
    """A batch (B, ...) of the modality, or a sequence (B, steps, ...) of single items."""
    lead = (b,) if steps is None else (b, steps)
    if modality == "image":
        return torch.rand(*lead, channels, IMAGE_SIZE, IMAGE_SIZE)
    if modality == "obs":
        return torch.randn(*lead, OBS_DIM)
    if modality == "text":
        return torch.randint(1, TEXT_VOCAB - 2, (*lead, TEXT_LEN))
    return 0.1 * torch.randn(*lead, AUDIO_SAMPLES)


def make_batch(modality: str, b: int, steps: int | None = None, channels: int = 1, labels=None) -> Batch:
    return Batch({modality: make_data(modality, b, steps, channels)}, labels)


def strip_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm1d by Identity (per-rank BN statistics differ from the global batch's by design)."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm1d):
            setattr(module, name, nn.Identity())
        else:
            strip_batchnorm(child)
    return module
