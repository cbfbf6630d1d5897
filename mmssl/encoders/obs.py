"""Observation encoders for RL (modality ``obs``): vectors, pixels, MiniGrid grids and dict observations.

Each takes the raw observation batch an env produces — (B, D) floats, (B, C, H, W) uint8 or float
pixels, (B, H, W, 3) MiniGrid ids, or a dict of those — and returns ``EncoderOutput(pooled=(B, dim))``.
``encoder_for_space(space, spec)`` builds one for a gymnasium space, filling input sizes from the space
and checking, with a dry run, that encoder and space fit; when they do not, the one-line error names both.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from mmssl.encoders.base import Encoder
from mmssl.errors import ConfigError, MMSSLError, ShapeError
from mmssl.registry import ENCODERS
from mmssl.types import IMAGE, OBS, TEXT, EncoderOutput

_ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}


def layer_init(layer: nn.Module, gain: float = math.sqrt(2), bias: float = 0.0) -> nn.Module:
    """Orthogonal weights and constant bias, as in CleanRL (Engstrom et al. 2020, "implementation matters")."""
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.constant_(layer.bias, bias)
    return layer


def to_unit_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels → float in [0, 1]; float inputs are taken to be in [0, 1] already."""
    return x.float() / 255.0 if x.dtype == torch.uint8 else x.float()


@ENCODERS.register("mlp", modalities=(OBS,))
class MLPObs(Encoder):
    """Vector observations (B, *shape) → flatten → ``layers`` × (Linear, tanh/ReLU) → (B, dim).

    CleanRL's ``ppo.py`` trunk is ``in_dim → 64 → 64`` with tanh and orthogonal init (gain √2).
    """

    modality = OBS

    def __init__(self, in_dim: int = 4, dim: int = 64, layers: int = 2, activation: str = "tanh"):
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ConfigError(f"mlp activation must be one of {list(_ACTIVATIONS)}, got {activation!r}")
        self.in_dim, self.dim, self.activation = in_dim, dim, activation
        modules, d = [], in_dim
        for _ in range(layers):
            modules += [layer_init(nn.Linear(d, dim)), _ACTIVATIONS[activation]()]
            d = dim
        self.net = nn.Sequential(*modules)

    def check_input(self, x: torch.Tensor) -> None:
        if x.ndim < 2 or math.prod(x.shape[1:]) != self.in_dim:
            raise ShapeError(f"mlp expects vector observations (B, {self.in_dim}), got a tensor of shape "
                             f"{tuple(x.shape)}")

    def encode(self, x: torch.Tensor) -> EncoderOutput:
        return EncoderOutput(pooled=self.net(x.flatten(1).float()))


class _PixelObs(Encoder):
    modality = OBS
    in_channels = 3

    def check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ShapeError(f"{self.registry_name} expects pixel observations (B, {self.in_channels}, H, W) "
                             f"channels-first, got a tensor of shape {tuple(x.shape)}")


@ENCODERS.register("nature_cnn", modalities=(OBS,))
class NatureCNN(_PixelObs):
    """The DQN network (Mnih et al. 2015): conv 8×8/4 (32), 4×4/2 (64), 3×3/1 (64), linear → (B, dim).

    Input (B, C, H, W) uint8 or float, scaled to [0, 1] inside; at least 36×36 pixels. tokens: the last
    feature map's cells, (B, h·w, 64) — not ``dim``-wide, so they are returned only via ``feature_map``.
    """

    def __init__(self, in_channels: int = 4, dim: int = 512, image_size: int = 84):
        super().__init__()
        if image_size < 36:
            raise ConfigError(f"nature_cnn needs images of at least 36 pixels a side, got {image_size}; "
                              "use impala_cnn or minigrid for small observations")
        self.in_channels, self.dim = in_channels, dim
        self.conv = nn.Sequential(
            layer_init(nn.Conv2d(in_channels, 32, 8, stride=4)), nn.ReLU(),
            layer_init(nn.Conv2d(32, 64, 4, stride=2)), nn.ReLU(),
            layer_init(nn.Conv2d(64, 64, 3, stride=1)), nn.ReLU(), nn.Flatten())
        with torch.no_grad():
            flat = self.conv(torch.zeros(1, in_channels, image_size, image_size)).shape[1]
        self.fc = nn.Sequential(layer_init(nn.Linear(flat, dim)), nn.ReLU())

    def encode(self, x: torch.Tensor) -> EncoderOutput:
        return EncoderOutput(pooled=self.fc(self.conv(to_unit_float(x))))


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv0 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv1(torch.relu(self.conv0(torch.relu(x))))


@ENCODERS.register("impala_cnn", modalities=(OBS,))
class ImpalaCNN(_PixelObs):
    """IMPALA's residual network (Espeholt et al. 2018): per stage conv 3×3, max-pool 3×3/2, two residual blocks.

    Input (B, C, H, W) uint8 or float, scaled to [0, 1] inside; any size ≥ 8 pixels. Stages of
    ``channels`` (16, 32, 32), then ReLU, flatten and linear → (B, dim); tokens: the last feature map
    projected to ``dim``, (B, h·w, dim).
    """

    def __init__(self, in_channels: int = 3, dim: int = 256, channels: list[int] = (16, 32, 32),
                 image_size: int = 64):
        super().__init__()
        self.in_channels, self.dim = in_channels, dim
        stages, c = [], in_channels
        for out in channels:
            stages += [nn.Conv2d(c, out, 3, padding=1), nn.MaxPool2d(3, stride=2, padding=1),
                       _ResidualBlock(out), _ResidualBlock(out)]
            c = out
        self.stages = nn.Sequential(*stages, nn.ReLU())
        with torch.no_grad():
            fmap = self.stages(torch.zeros(1, in_channels, image_size, image_size))
        self.fc = nn.Sequential(layer_init(nn.Linear(fmap[0].numel(), dim)), nn.ReLU())
        self.token_proj = nn.Linear(c, dim)

    def encode(self, x: torch.Tensor) -> EncoderOutput:
        fmap = self.stages(to_unit_float(x))
        tokens = self.token_proj(fmap.flatten(2).transpose(1, 2))
        return EncoderOutput(pooled=self.fc(fmap.flatten(1)), tokens=tokens)


@ENCODERS.register("minigrid", modalities=(OBS,))
class MiniGridObs(Encoder):
    """MiniGrid symbolic grids (B, H, W, 3) of (object, colour, state) ids → (B, dim).

    Each id is embedded (one table with per-channel offsets, as in the "bag of words" encoder of the
    BabyAI baselines) and the three embeddings are summed per cell: (B, emb, H, W); then
    rl-starter-files' conv stack (2×2 convs 16/32/64 with a 2×2 max-pool) and a linear map.
    tokens: the per-cell embeddings projected to ``dim``, (B, H·W, dim).
    """

    modality = OBS
    #: MiniGrid's OBJECT_TO_IDX has 11 entries, COLOR_TO_IDX 6, STATE_TO_IDX 3
    VOCAB = (11, 6, 3)

    def __init__(self, grid_size: int = 7, embed_dim: int = 16, dim: int = 64):
        super().__init__()
        self.grid_size, self.dim = grid_size, dim
        self.embed = nn.Embedding(sum(self.VOCAB), embed_dim)
        self.register_buffer("offsets", torch.tensor([0, self.VOCAB[0], self.VOCAB[0] + self.VOCAB[1]]),
                             persistent=False)
        self.register_buffer("largest", torch.tensor(self.VOCAB) - 1, persistent=False)
        self.conv = nn.Sequential(
            nn.Conv2d(embed_dim, 16, 2), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
            nn.Conv2d(16, 32, 2, padding=1 if grid_size < 5 else 0), nn.ReLU(),
            nn.Conv2d(32, 64, 2), nn.ReLU(), nn.Flatten())
        with torch.no_grad():
            flat = self.conv(torch.zeros(1, embed_dim, grid_size, grid_size)).shape[1]
        self.fc = nn.Sequential(nn.Linear(flat, dim), nn.ReLU())
        self.token_proj = nn.Linear(embed_dim, dim)

    def check_input(self, x: torch.Tensor) -> None:
        g = self.grid_size
        if x.ndim != 4 or tuple(x.shape[1:]) != (g, g, 3):
            raise ShapeError(f"minigrid expects symbolic grids (B, {g}, {g}, 3) of integer ids, got a tensor of "
                             f"shape {tuple(x.shape)}")

    def encode(self, x: torch.Tensor) -> EncoderOutput:
        # MiniGrid ids stay inside the tables; the clamp only guards arbitrary samples of the Box(0, 255) space
        ids = torch.minimum(x.long().clamp(min=0), self.largest) + self.offsets  # (B, H, W, 3)
        cells = self.embed(ids).sum(dim=3)  # (B, H, W, emb)
        fmap = cells.permute(0, 3, 1, 2)
        return EncoderOutput(pooled=self.fc(self.conv(fmap)), tokens=self.token_proj(cells.flatten(1, 2)))


class ModalityAdapter(Encoder):
    """Feeds raw observations to an encoder of another modality (image, text, audio) as ``obs``.

    Images: channel-last (B, H, W, C) is permuted to (B, C, H, W) and uint8 scaled to [0, 1], which is
    what image encoders expect; text: ids cast to long; audio: float. ``inner`` keeps the encoder's own
    parameter names, so pretrained weights load into it unchanged.
    """

    modality = OBS

    def __init__(self, inner: Encoder, channels_last: bool = False):
        super().__init__()
        self.inner, self.channels_last, self.dim = inner, channels_last, inner.dim

    def encode(self, x: torch.Tensor) -> EncoderOutput:
        if self.inner.modality == IMAGE:
            x = to_unit_float(x.permute(0, 3, 1, 2) if self.channels_last else x)
        elif self.inner.modality == TEXT:
            x = x.long()
        else:
            x = x.float()
        return self.inner(x)


@ENCODERS.register("dict", modalities=(OBS,))
class DictObs(Encoder):
    """Dict observations: one registry encoder per key (``encoders: {key: {name, ...}}``), fused.

    Each key's pooled features are concatenated, (B, Σ dim_k), and mapped by Linear + ReLU to (B, dim).
    Sub-encoders live in ``self.encoders`` (an ``nn.ModuleDict`` keyed by observation key). Specs for
    keys of other modalities (an image key with ``convnet``, a text key with a text tower) are wrapped in
    ``ModalityAdapter``; use ``encoder_for_space`` to fill input sizes from the observation space.
    """

    modality = OBS
    reads_dict = True

    def __init__(self, encoders: dict, dim: int = 128):
        super().__init__()
        if not encoders:
            raise ConfigError("dict encoder needs at least one entry in encoders: {obs_key: {name: ..., ...}}")
        built = {}
        for key, spec in encoders.items():
            if isinstance(spec, Encoder):
                built[key] = spec
                continue
            if not isinstance(spec, Mapping) or "name" not in spec:
                raise ConfigError(f"dict encoder entry {key!r} needs a spec with a 'name' (`mmssl list encoders`)")
            built[key] = _build_one(dict(spec))
        self.encoders = nn.ModuleDict(built)
        self.dim = dim
        self.fuse = nn.Sequential(nn.Linear(sum(e.dim for e in built.values()), dim), nn.ReLU())

    def forward(self, x) -> EncoderOutput:
        if not isinstance(x, Mapping):
            raise ShapeError(f"dict encoder expects a dict observation with keys {sorted(self.encoders)}, got a "
                             f"tensor of shape {tuple(x.shape)}")
        missing = sorted(set(self.encoders) - set(x))
        if missing:
            raise ShapeError(f"dict encoder expects observation keys {sorted(self.encoders)}, the observation has "
                             f"{sorted(x)} (missing {missing})")
        pooled = [enc(x[key]).pooled for key, enc in self.encoders.items()]
        return EncoderOutput(pooled=self.fuse(torch.cat(pooled, dim=1)))


@ENCODERS.register("one_hot", modalities=(OBS,))
class OneHotObs(Encoder):
    """Discrete observations (B,) or (B, 1) integer ids → one-hot (B, n) → linear + ReLU → (B, dim)."""

    modality = OBS

    def __init__(self, n: int = 4, dim: int = 16):
        super().__init__()
        self.n, self.dim = n, dim
        self.net = nn.Sequential(nn.Linear(n, dim), nn.ReLU())

    def check_input(self, x: torch.Tensor) -> None:
        if x.ndim > 2 or (x.ndim == 2 and x.shape[1] != 1):
            raise ShapeError(f"one_hot expects discrete observations (B,) of ids below {self.n}, got shape "
                             f"{tuple(x.shape)}")

    def encode(self, x: torch.Tensor) -> EncoderOutput:
        return EncoderOutput(pooled=self.net(nn.functional.one_hot(x.long().reshape(-1), self.n).float()))


def _build_one(spec: dict) -> Encoder:
    name = spec.pop("name")
    channels_last = bool(spec.pop("channels_last", False))
    encoder = ENCODERS.build(name, **spec)
    return encoder if encoder.modality == OBS else ModalityAdapter(encoder, channels_last)


def _channels_last(shape: tuple[int, ...]) -> bool:
    return len(shape) == 3 and shape[-1] <= 4 < shape[0]


def _fill_from_space(space: gym.Space, spec: dict) -> dict:
    """Fill the input-size options the encoder accepts (and the user left out) from ``space``."""
    spec = dict(spec)
    name = spec.get("name")
    if name is None:
        raise ConfigError("the agent encoder spec needs a 'name' (`mmssl list encoders`)")
    if name == "dict":
        return _fill_dict_from_space(space, spec)
    accepted = {p.name for p in ENCODERS.parameters(name)}
    shape = tuple(getattr(space, "shape", None) or ())
    guesses: dict = {}
    if isinstance(space, gym.spaces.Discrete):
        guesses["n"] = int(space.n)
    elif len(shape) == 3:
        c_last = _channels_last(shape)
        c, h = (shape[2], shape[0]) if c_last else (shape[0], shape[1])
        guesses |= {"in_channels": c, "image_size": h} | ({"grid_size": shape[0]} if c_last else {})
        if ENCODERS.get(name).modalities and OBS not in ENCODERS.get(name).modalities:
            spec.setdefault("channels_last", c_last)
    elif shape:
        guesses["in_dim"] = int(np.prod(shape))
    for key, value in guesses.items():
        if key in accepted and key not in spec:
            spec[key] = value
    return spec


def _fill_dict_from_space(space: gym.Space, spec: dict) -> dict:
    """The ``dict`` encoder's spec with each per-key entry filled from that key's sub-space of a Dict ``space``."""
    if not isinstance(space, gym.spaces.Dict):
        raise ConfigError(f"encoder 'dict' expects a Dict observation space, but the env's observation space is "
                          f"{space}; use an encoder for that space (mlp, nature_cnn, impala_cnn, minigrid)")
    subs = dict(spec.get("encoders") or {})
    unknown = sorted(set(subs) - set(space.spaces))
    if unknown:
        raise ConfigError(f"encoder 'dict' has entries {unknown} that the env's observation space {space} lacks; "
                          f"its keys are {sorted(space.spaces)}")
    spec["encoders"] = {k: _fill_from_space(space.spaces[k], v) for k, v in subs.items()}
    return spec


def sample_batch(space: gym.Space, n: int = 2, seed: int = 0):
    """``n`` samples of ``space`` stacked as torch tensors (a dict for Dict spaces)."""
    space = copy.deepcopy(space)
    space.seed(seed)
    samples = [space.sample() for _ in range(n)]
    if isinstance(space, gym.spaces.Dict):
        return {k: torch.as_tensor(np.stack([s[k] for s in samples])) for k in space.spaces}
    return torch.as_tensor(np.stack(samples))


def encoder_for_space(space: gym.Space, spec: Mapping) -> Encoder:
    """Build the encoder ``spec`` ({name, **options}) for observations from ``space`` and check that they fit.

    Input sizes the spec leaves out (``in_dim``, ``in_channels``, ``image_size``, ``grid_size``, ``n``;
    per key for ``dict``) are read from the space. A dry run on two sampled observations turns any
    mismatch into one ``ConfigError`` naming the encoder's expected input and the env's space.
    """
    spec = _fill_from_space(space, dict(spec))
    name = spec["name"]
    try:
        encoder = _build_one(spec)
        with torch.no_grad():
            training = encoder.training
            out = encoder.eval()(sample_batch(space))
            encoder.train(training)
    except (ShapeError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"encoder {name!r} does not fit the env's observation space {_describe(space)}: "
                          f"{first[:300]}") from None
    except MMSSLError:
        raise
    if out.pooled.shape != (2, encoder.dim):
        raise ConfigError(f"encoder {name!r} returned features of shape {tuple(out.pooled.shape)} for the env's "
                          f"observation space {_describe(space)}; expected (B, {encoder.dim})")
    return encoder


def _describe(space: gym.Space) -> str:
    return " ".join(str(space).split())
