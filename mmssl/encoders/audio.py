"""Audio encoders over a torchaudio log-mel front end: a small conv net and an AST-style patch transformer.

Both read waveforms (B, samples) at ``sample_rate`` and share one protocol, which masked-audio and
other spectrogram-level objectives code against:

- ``frontend(wave) -> (B, n_mels, frames)``: log-mel (MelSpectrogram → AmplitudeToDB), standardised
  per clip (zero mean, unit variance), so loudness never reaches the network;
- ``encode_spectrogram(spec) -> EncoderOutput``: pooled (B, dim) and time-ordered tokens (B, N, dim);
- ``encode(wave)`` = ``frontend`` → SpecAugment (training mode only, if configured) → ``encode_spectrogram``.

Window and hop are given in milliseconds, so one config works at any sample rate.
"""

from __future__ import annotations

import math

import torch
import torchaudio.transforms as T
from einops import rearrange
from torch import nn

from mmssl.encoders.base import Encoder
from mmssl.encoders.vit import PatchEmbedding
from mmssl.errors import ConfigError
from mmssl.registry import ENCODERS
from mmssl.types import AUDIO, EncoderOutput


class _AudioEncoder(Encoder):
    modality = AUDIO

    def _set_frontend(self, sample_rate: int, n_mels: int, win_ms: float, hop_ms: float, freq_mask: int,
                      time_mask: int) -> None:
        if sample_rate <= 0 or n_mels <= 0:
            raise ConfigError(f"audio encoder needs positive sample_rate and n_mels, got {sample_rate}, {n_mels}")
        self.sample_rate, self.n_mels = sample_rate, n_mels
        win = max(8, int(round(sample_rate * win_ms / 1000)))
        self.hop_length = max(1, int(round(sample_rate * hop_ms / 1000)))
        n_fft = 2 ** math.ceil(math.log2(win))
        if n_fft // 2 + 1 < n_mels:
            raise ConfigError(f"n_mels={n_mels} is more than the {n_fft // 2 + 1} FFT bins of a {win_ms} ms window at "
                              f"{sample_rate} Hz; lower n_mels or raise win_ms")
        self.mel = T.MelSpectrogram(sample_rate, n_fft=n_fft, win_length=win, hop_length=self.hop_length,
                                    n_mels=n_mels, f_min=20.0, f_max=sample_rate / 2)
        self.to_db = T.AmplitudeToDB(stype="power", top_db=80.0)
        # iid_masks: every clip in the batch gets its own mask (needs a channel axis, added in encode)
        self.spec_augment = nn.Sequential(
            *([T.FrequencyMasking(freq_mask, iid_masks=True)] if freq_mask else []),
            *([T.TimeMasking(time_mask, iid_masks=True)] if time_mask else []))

    def check_input(self, x: torch.Tensor) -> None:
        self.expect(x, 2, f"waveforms (B, samples) at {self.sample_rate} Hz")

    def frames(self, samples: int) -> int:
        """Number of spectrogram frames for a clip of ``samples`` samples (centred STFT)."""
        return samples // self.hop_length + 1

    def frontend(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, samples) → per-clip standardised log-mel (B, n_mels, frames)."""
        with torch.autocast(wave.device.type, enabled=False):  # the STFT and log want float32
            db = self.to_db(self.mel(wave.float()))
        mean = db.mean(dim=(1, 2), keepdim=True)
        std = db.std(dim=(1, 2), keepdim=True)
        return (db - mean) / (std + 1e-5)

    def encode(self, x: torch.Tensor) -> EncoderOutput:
        spec = self.frontend(x)
        if self.training and len(self.spec_augment):
            spec = self.spec_augment(spec.unsqueeze(1)).squeeze(1)
        return self.encode_spectrogram(spec)

    def encode_spectrogram(self, spec: torch.Tensor) -> EncoderOutput:  # pragma: no cover - abstract
        raise NotImplementedError


def _conv(cin: int, cout: int, stride: tuple[int, int]) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


@ENCODERS.register("audio_conv", modalities=(AUDIO,))
class AudioConv(_AudioEncoder):
    """Small conv net over a log-mel spectrogram: four conv stages (width, 2w, 4w, 4w), frequency pooled out.

    Stages halve frequency each time and time in the first two (so a token covers 4 hops = 40 ms by
    default). tokens: (B, frames', dim), one per time step after averaging over frequency; pooled:
    their mean and max concatenated and projected back to ``dim`` (max keeps short, loud events).
    """

    def __init__(self, sample_rate: int = 16000, n_mels: int = 40, width: int = 32, win_ms: float = 25.0,
                 hop_ms: float = 10.0, freq_mask: int = 0, time_mask: int = 0):
        super().__init__()
        self._set_frontend(sample_rate, n_mels, win_ms, hop_ms, freq_mask, time_mask)
        widths, strides = [width, 2 * width, 4 * width, 4 * width], [(2, 2), (2, 2), (2, 1), (2, 1)]
        blocks, cin = [], 1
        for w, s in zip(widths, strides):
            blocks += [_conv(cin, w, s), _conv(w, w, (1, 1))]
            cin = w
        self.features = nn.Sequential(*blocks)
        self.pool = nn.Linear(2 * cin, cin)
        self.dim = cin

    def encode_spectrogram(self, spec: torch.Tensor) -> EncoderOutput:
        fmap = self.features(spec.unsqueeze(1))  # (B, C, F', T')
        tokens = rearrange(fmap.mean(dim=2), "b c t -> b t c")
        pooled = self.pool(torch.cat([tokens.mean(dim=1), tokens.amax(dim=1)], dim=1))
        return EncoderOutput(pooled=pooled, tokens=tokens)


def sinusoidal_positions(n: int, dim: int, device=None) -> torch.Tensor:
    """(n, dim) fixed sin/cos position codes (Vaswani et al. 2017), so any clip length works."""
    pos = torch.arange(n, device=device, dtype=torch.float32).unsqueeze(1)
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(n, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)[:, : dim // 2]
    return pe


@ENCODERS.register("audio_transformer", modalities=(AUDIO,))
class AudioTransformer(_AudioEncoder):
    """AST-style transformer (Gong et al. 2021) over non-overlapping log-mel patches.

    The spectrogram (B, n_mels, frames) is cut into ``patch_mels`` × ``patch_frames`` patches (a strided
    conv), plus sin/cos positions over time and a learned frequency-band embedding, then a pre-norm
    transformer. The default ``patch_mels = n_mels`` gives one token per ``patch_frames`` hops.
    tokens: (B, N, dim) in time-major order ``(t f)``, so they are time-ordered; pooled: the mean token
    after the final LayerNorm. Implements the patch protocol of ``mmssl.encoders.vit`` (``embed`` /
    ``transform``), so MAE, I-JEPA and data2vec run on its spectrogram patches (``patch_mels < n_mels``
    gives Audio-MAE's 2-D patches).
    """

    def __init__(self, sample_rate: int = 16000, n_mels: int = 64, dim: int = 128, depth: int = 4, heads: int = 4,
                 patch_frames: int = 4, patch_mels: int | None = None, mlp_ratio: float = 4.0, dropout: float = 0.0,
                 win_ms: float = 25.0, hop_ms: float = 10.0, freq_mask: int = 0, time_mask: int = 0):
        super().__init__()
        self._set_frontend(sample_rate, n_mels, win_ms, hop_ms, freq_mask, time_mask)
        patch_mels = patch_mels or n_mels
        if n_mels % patch_mels:
            raise ConfigError(f"audio_transformer: patch_mels={patch_mels} must divide n_mels={n_mels}")
        if dim % heads:
            raise ConfigError(f"audio_transformer: dim={dim} must be divisible by heads={heads}")
        self.patch = nn.Conv2d(1, dim, kernel_size=(patch_mels, patch_frames), stride=(patch_mels, patch_frames))
        self.band = nn.Parameter(torch.zeros(n_mels // patch_mels, dim))
        layer = nn.TransformerEncoderLayer(dim, heads, int(dim * mlp_ratio), dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.patch_frames, self.patch_mels, self.dim = patch_frames, patch_mels, dim
        self.patch_dim = patch_frames * patch_mels

    def embed_spectrogram(self, spec: torch.Tensor) -> PatchEmbedding:
        """(B, n_mels, frames) → ``PatchEmbedding`` over the (steps, bands) patch grid in ``(t f)`` order;
        ``patches`` are the log-mel values under each patch, ``(mel frame)`` per patch."""
        pad = (-spec.shape[-1]) % self.patch_frames  # a partial last patch is zero-padded, not dropped
        spec = nn.functional.pad(spec, (0, pad))
        x = self.patch(spec.unsqueeze(1))  # (B, dim, bands, steps)
        steps, bands = x.shape[3], x.shape[2]
        pos = self.band[None] + sinusoidal_positions(steps, self.dim, x.device)[:, None]  # (steps, bands, dim)
        patches = rearrange(spec, "b (f m) (t s) -> b (t f) (m s)", m=self.patch_mels, s=self.patch_frames)
        return PatchEmbedding(rearrange(x, "b d f t -> b (t f) d"), rearrange(pos, "t f d -> 1 (t f) d"), patches,
                              (steps, bands))

    def embed(self, wave: torch.Tensor) -> PatchEmbedding:
        """Waveforms (B, samples) → log-mel (no SpecAugment) → ``PatchEmbedding`` (the patch protocol of ``vit``)."""
        self.check_input(wave)
        return self.embed_spectrogram(self.frontend(wave))

    def transform(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, K, dim) position-coded tokens (any subset of the patches) → (B, K, dim) after the final LayerNorm."""
        return self.norm(self.blocks(tokens))

    def encode_spectrogram(self, spec: torch.Tensor) -> EncoderOutput:
        e = self.embed_spectrogram(spec)
        tokens = self.transform(e.tokens + e.pos)
        return EncoderOutput(pooled=tokens.mean(dim=1), tokens=tokens)
