"""Predictive (pretext) objectives: hide or transform part of the input and predict it back.

Masked modelling reads the encoder's tokens: image tokens are a row-major grid (B, gh·gw, D) over the
image, text tokens one per input id (B, L, D), audio tokens time-ordered (B, T', D) over the log-mel
frames. Each objective owns its small decoder/classifier head.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from mmssl.augment.image import grayscale
from mmssl.encoders.base import Encoder
from mmssl.encoders.heads import mlp
from mmssl.errors import ConfigError, ShapeError
from mmssl.objectives.base import Objective
from mmssl.registry import OBJECTIVES
from mmssl.types import Batch, EncoderOutput, ObjectiveOutput


def token_grid(n_tokens: int, height: int, width: int) -> tuple[int, int]:
    """The (gh, gw) grid of ``n_tokens`` row-major tokens over an H×W image (same aspect ratio)."""
    gh = max(1, round(math.sqrt(n_tokens * height / width)))
    gw = n_tokens // gh
    if gh * gw != n_tokens:
        raise ShapeError(f"cannot lay {n_tokens} tokens on a grid over a {height}×{width} image; "
                         "use an encoder whose tokens form an image-shaped grid (conv map or ViT patches)")
    return gh, gw


def patchify(images: torch.Tensor, grid: tuple[int, int], patch: int) -> torch.Tensor:
    """(B, C, H, W) → (B, gh·gw, C·patch²): the image resized to (gh·patch, gw·patch), cut row-major into patches."""
    gh, gw = grid
    size = (gh * patch, gw * patch)
    if tuple(images.shape[-2:]) != size:
        images = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)
    return rearrange(images, "b c (h p1) (w p2) -> b (h w) (c p1 p2)", p1=patch, p2=patch)


def random_token_mask(batch: int, n: int, ratio: float, device) -> torch.Tensor:
    """(B, N) bool with exactly ``clamp(round(ratio·N), 1, N)`` True per row, at uniformly random positions."""
    k = min(n, max(1, round(ratio * n)))
    ranks = torch.rand(batch, n, device=device).argsort(1).argsort(1)
    return ranks < k


def masked_mse(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``Σ w·mean_feat (pred - target)² / Σ w`` for (B, N, F) predictions and (B, N) weights (masked tokens)."""
    per_token = (pred.float() - target.float()).pow(2).mean(-1)
    return (per_token * weight).sum() / weight.sum().clamp(min=1e-8)


def require_tokens(out: EncoderOutput, objective: str, encoder: Encoder) -> torch.Tensor:
    if out.tokens is None:
        raise ConfigError(f"objective {objective!r} needs per-token outputs but encoder {type(encoder).__name__} "
                          "returns only pooled features; use an encoder that returns tokens")
    return out.tokens


def time_steps(tokens: torch.Tensor, encoder: Encoder) -> torch.Tensor:
    """(B, N, D) tokens → (B, T', D) one per time step: encoders that emit several frequency-band tokens per
    step in ``(t f)`` order (AudioTransformer with patch_mels < n_mels) are averaged over the bands."""
    bands = getattr(encoder, "bands", None)
    band = getattr(encoder, "band", None)
    if bands is None and isinstance(band, torch.Tensor):  # AudioTransformer keeps one embedding row per band
        bands = band.shape[0]
    if not bands or bands == 1:
        return tokens
    if tokens.shape[1] % bands:
        raise ShapeError(f"{tokens.shape[1]} tokens do not split into {bands} frequency bands per time step")
    return rearrange(tokens, "b (t f) d -> b t f d", f=bands).mean(2)


@OBJECTIVES.register("masked_image", modalities=("image",))
class MaskedImage(Objective):
    """Masked image modelling, SimMIM/MAE-style: mask random patches, regress their pixels (Xie et al. 2022; He et al. 2022).

    The mask lives on the encoder's token grid (gh, gw): masked pixels are replaced by a learnt fill
    colour (SimMIM's mask token, at the pixel level so any encoder works), the encoder returns tokens
    (B, gh·gw, D), a linear decoder maps each to its patch's pixels (C·p², the image resized to gh·p ×
    gw·p, p = ``target_patch_size``), and ``L = mean over masked patches of ‖x̂ - x‖²/(C·p²)``
    (``normalize_target``: per-patch standardised targets, MAE's norm-pix loss).
    """

    def __init__(self, encoders: Mapping[str, Encoder], modality: str | None = None, mask_ratio: float = 0.6,
                 target_patch_size: int = 4, normalize_target: bool = False, augment: str | None = "identity",
                 augment_kwargs: dict | None = None):
        super().__init__(encoders, modality)
        if not 0.0 < mask_ratio < 1.0:
            raise ConfigError(f"masked_image mask_ratio must be in (0, 1), got {mask_ratio}")
        encoder = encoders[self.modality]
        self.channels = int(getattr(encoder, "in_channels", 3))
        self.mask_ratio, self.patch, self.normalize_target = mask_ratio, target_patch_size, normalize_target
        self.decoder = nn.Linear(encoder.dim, self.channels * target_patch_size ** 2)
        self.mask_fill = nn.Parameter(torch.full((self.channels,), 0.5))
        self.augment = self.build_augment(augment, augment_kwargs)
        self._grids: dict[tuple[int, int], tuple[int, int]] = {}

    @torch.no_grad()
    def grid(self, encoder: Encoder, x: torch.Tensor) -> tuple[int, int]:
        """The encoder's token grid for this input size, found once per size with an eval-mode forward
        (eval so BatchNorm statistics, and hence exact resume, are not affected)."""
        key = tuple(x.shape[-2:])
        if key not in self._grids:
            was_training = encoder.training
            encoder.eval()
            tokens = require_tokens(encoder(x[:1]), "masked_image", encoder)
            encoder.train(was_training)
            self._grids[key] = token_grid(tokens.shape[1], *key)
        return self._grids[key]

    def forward(self, batch: Batch, encoders: Mapping[str, Encoder]) -> ObjectiveOutput:
        encoder = encoders[self.modality]
        x = self.augment(self.inputs(batch))
        gh, gw = self.grid(encoder, x)
        mask = random_token_mask(len(x), gh * gw, self.mask_ratio, x.device)  # (B, N)
        pixel_mask = F.interpolate(mask.view(-1, 1, gh, gw).float(), size=x.shape[-2:], mode="nearest").bool()
        masked = torch.where(pixel_mask, self.mask_fill.view(1, -1, 1, 1).to(x.dtype), x)
        tokens = require_tokens(encoder(masked), "masked_image", encoder)
        target = patchify(x, (gh, gw), self.patch)
        if self.normalize_target:
            target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
        loss = masked_mse(self.decoder(tokens), target, mask.float())
        return ObjectiveOutput(loss, {"mask_ratio": mask.float().mean().item()})


class BertMasking(nn.Module):
    """BERT's corruption of token ids (Devlin et al. 2019), for ``masked_text`` and ``data2vec`` on text.

    ``round(mask_prob·n)`` (at least one) of each row's n maskable positions — all but ``pad_id`` and
    ``special_ids`` (start/end of text) — are chosen; of those 80 % become ``mask_id``, 10 % a random
    ordinary id (never padding or a special id), 10 % stay. ``forward(ids (B, L))`` returns
    ``(corrupted (B, L), chosen (B, L) bool)``.
    """

    def __init__(self, vocab_size: int, mask_prob: float, mask_id: int, pad_id: int, special_ids: Sequence[int]):
        super().__init__()
        self.mask_prob, self.mask_id = mask_prob, mask_id
        self.register_buffer("special_ids", torch.tensor([pad_id, *special_ids], dtype=torch.long), persistent=False)
        ordinary = torch.ones(vocab_size, dtype=torch.bool)
        ordinary[[i for i in (pad_id, *special_ids) if 0 <= i < vocab_size]] = False
        self.register_buffer("ordinary_ids", ordinary.nonzero().squeeze(1), persistent=False)

    def choose(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, L) bool: ``round(mask_prob·n)`` (≥ 1) random positions among each row's n maskable ones."""
        maskable = ~torch.isin(ids, self.special_ids)
        count = maskable.sum(1, keepdim=True)
        k = (count.float() * self.mask_prob).round().clamp(min=1).minimum(count)
        scores = torch.rand(ids.shape, device=ids.device).masked_fill(~maskable, 2.0)  # unmaskable sort last
        return (scores.argsort(1).argsort(1) < k) & maskable

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        chosen = self.choose(ids)
        draw = torch.rand(ids.shape, device=ids.device)
        corrupted = ids.masked_fill(chosen & (draw < 0.8), self.mask_id)
        random_ids = self.ordinary_ids[torch.randint(0, len(self.ordinary_ids), ids.shape, device=ids.device)]
        return torch.where(chosen & (draw >= 0.8) & (draw < 0.9), random_ids, corrupted), chosen


@OBJECTIVES.register("masked_text", modalities=("text",))
class MaskedText(Objective):
    """BERT-style masked-token prediction on token ids (B, L) (Devlin et al. 2019).

    ``mask_prob`` of the non-special positions (at least one per sequence) are chosen; of those 80% become
    ``mask_id``, 10% a random ordinary id, 10% stay (``BertMasking``). A LayerNorm + linear head over the encoder's per-position
    tokens (B, L, D) predicts the original ids: ``L = CE(head(h_i), x_i)`` averaged over chosen positions.
    open_clip's vocabulary (49408 ids, the default ``vocab_size``) has no mask token: ``mask_id`` defaults
    to the encoder's ``mask_token_id`` when it declares one, else ``pad_id``. ``pad_id`` and
    ``special_ids`` (start/end of text) are never chosen.
    """

    def __init__(self, encoders: Mapping[str, Encoder], modality: str | None = None, vocab_size: int = 49408,
                 mask_prob: float = 0.15, mask_id: int | None = None, pad_id: int = 0,
                 special_ids: list[int] = (49406, 49407), augment: str | None = "identity",
                 augment_kwargs: dict | None = None):
        super().__init__(encoders, modality)
        if not 0.0 < mask_prob < 1.0:
            raise ConfigError(f"masked_text mask_prob must be in (0, 1), got {mask_prob}")
        encoder = encoders[self.modality]
        self.vocab_size = vocab_size
        mask_id = mask_id if mask_id is not None else int(getattr(encoder, "mask_token_id", pad_id))
        self.masking = BertMasking(vocab_size, mask_prob, mask_id, pad_id, special_ids)
        self.head = nn.Sequential(nn.LayerNorm(encoder.dim), nn.Linear(encoder.dim, vocab_size))
        self.augment = self.build_augment(augment, augment_kwargs)

    def forward(self, batch: Batch, encoders: Mapping[str, Encoder]) -> ObjectiveOutput:
        encoder = encoders[self.modality]
        ids = self.augment(self.inputs(batch)).long()
        corrupted, chosen = self.masking(ids)
        tokens = require_tokens(encoder(corrupted), "masked_text", encoder)
        if tokens.shape[:2] != ids.shape:
            raise ShapeError(f"masked_text needs one token per input id: ids {tuple(ids.shape)}, tokens "
                             f"{tuple(tokens.shape)}; use a text encoder that returns per-position tokens")
        if not chosen.any():  # only special tokens in the batch: nothing to predict
            return ObjectiveOutput(tokens.sum() * 0, {"masked_accuracy": 0.0})
        logits = self.head(tokens[chosen]).float()  # (M, V)
        target = ids[chosen]
        loss = F.cross_entropy(logits, target)
        return ObjectiveOutput(loss, {"masked_accuracy": (logits.argmax(1) == target).float().mean().item()})


def block_mask(batch: int, length: int, blocks: int, max_width: int, device) -> torch.Tensor:
    """(B, length) bool: the union of ``blocks`` random blocks per row, widths uniform in [1, max_width]."""
    max_width = max(1, min(max_width, length))
    width = torch.randint(1, max_width + 1, (batch, blocks, 1), device=device)
    start = (torch.rand(batch, blocks, 1, device=device) * (length - width + 1)).long()
    pos = torch.arange(length, device=device)
    return ((pos >= start) & (pos < start + width)).any(1)


@OBJECTIVES.register("masked_audio", modalities=("audio",))
class MaskedAudio(Objective):
    """Masked spectrogram modelling: hide time and frequency blocks of the log-mel, reconstruct them (SpecAugment masks; cf. SSAST, Gong et al. 2022).

    Protocol (``mmssl.encoders.audio``): ``encoder.frontend(wave) -> (B, M, F)`` log-mel and
    ``encoder.encode_spectrogram(spec) -> EncoderOutput`` with time-ordered tokens (B, T', D). Masked
    cells are set to the sample's mean level; a linear decoder maps each token to the M mel bins of its
    time span; with targets and mask average-pooled from F frames to T' (``w`` = masked fraction),
    ``L = Σ w·(ŝ - s)² / Σ w``, i.e. the loss is on masked cells only (exactly so when T' = F).
    ``normalize_target`` standardises each sample's target spectrogram.
    """

    def __init__(self, encoders: Mapping[str, Encoder], modality: str | None = None, time_masks: int = 2,
                 time_mask_width: int = 10, freq_masks: int = 2, freq_mask_width: int = 8,
                 normalize_target: bool = True, augment: str | None = "identity", augment_kwargs: dict | None = None):
        super().__init__(encoders, modality)
        encoder = encoders[self.modality]
        if not (hasattr(encoder, "frontend") and hasattr(encoder, "encode_spectrogram")):
            raise ConfigError(f"masked_audio needs an audio encoder with frontend() and encode_spectrogram(); "
                              f"{type(encoder).__name__} has neither; use one from mmssl.encoders.audio")
        if time_masks + freq_masks < 1:
            raise ConfigError("masked_audio needs at least one time or frequency mask (time_masks + freq_masks ≥ 1)")
        n_mels = getattr(encoder, "n_mels", None)
        if n_mels is None:  # read it off the front end: one second of silence
            with torch.no_grad():
                n_mels = encoder.frontend(torch.zeros(1, int(getattr(encoder, "sample_rate", 16000)))).shape[1]
        self.masks = (time_masks, time_mask_width, freq_masks, freq_mask_width)
        self.normalize_target = normalize_target
        self.decoder = nn.Linear(encoder.dim, int(n_mels))
        self.augment = self.build_augment(augment, augment_kwargs)

    def mask(self, b: int, n_mels: int, frames: int, device) -> torch.Tensor:
        """(B, M, F) bool: union of time blocks (whole columns) and frequency blocks (whole rows)."""
        t_n, t_w, f_n, f_w = self.masks
        out = torch.zeros(b, n_mels, frames, dtype=torch.bool, device=device)
        if t_n:
            out |= block_mask(b, frames, t_n, t_w, device)[:, None, :]
        if f_n:
            out |= block_mask(b, n_mels, f_n, f_w, device)[:, :, None]
        return out

    def forward(self, batch: Batch, encoders: Mapping[str, Encoder]) -> ObjectiveOutput:
        encoder = encoders[self.modality]
        spec = encoder.frontend(self.augment(self.inputs(batch)))  # (B, M, F)
        b, m, f = spec.shape
        mask = self.mask(b, m, f, spec.device)
        fill = spec.detach().mean(dim=(1, 2), keepdim=True)
        tokens = require_tokens(encoder.encode_spectrogram(torch.where(mask, fill, spec)), "masked_audio", encoder)
        tokens = time_steps(tokens, encoder)  # (B, T', D)
        target = spec.detach().float()
        if self.normalize_target:
            target = (target - target.mean(dim=(1, 2), keepdim=True)) / (target.std(dim=(1, 2), keepdim=True) + 1e-5)
        steps = tokens.shape[1]
        target = F.adaptive_avg_pool1d(target, steps).transpose(1, 2)  # (B, T', M)
        weight = F.adaptive_avg_pool1d(mask.float(), steps).transpose(1, 2)  # (B, T', M)
        err = (self.decoder(tokens).float() - target).pow(2)
        loss = (err * weight).sum() / weight.sum().clamp(min=1e-8)
        return ObjectiveOutput(loss, {"masked_fraction": mask.float().mean().item()})


@OBJECTIVES.register("rotation", modalities=("image",))
class Rotation(Objective):
    """RotNet: predict which of 0°, 90°, 180°, 270° an image was rotated by (Gidaris, Singh & Komodakis 2018).

    Every image of the batch is shown in all four rotations (4B, C, H, W); an MLP on the pooled feature
    classifies the rotation: ``L = CE(head(f(rot_k x)), k)``. Images must be square.
    """

    def __init__(self, encoders: Mapping[str, Encoder], modality: str | None = None, hidden_dim: int = 256,
                 augment: str | None = "identity", augment_kwargs: dict | None = None):
        super().__init__(encoders, modality)
        self.head = mlp(encoders[self.modality].dim, hidden_dim, 4, 2)
        self.augment = self.build_augment(augment, augment_kwargs)

    def forward(self, batch: Batch, encoders: Mapping[str, Encoder]) -> ObjectiveOutput:
        x = self.augment(self.inputs(batch))
        if x.shape[-1] != x.shape[-2]:
            raise ShapeError(f"rotation needs square images, got {tuple(x.shape[-2:])}; resize or crop the data")
        rotated = torch.cat([torch.rot90(x, k, dims=(2, 3)) for k in range(4)])
        labels = torch.arange(4, device=x.device).repeat_interleave(len(x))
        logits = self.head(encoders[self.modality](rotated).pooled).float()
        loss = F.cross_entropy(logits, labels)
        return ObjectiveOutput(loss, {"rotation_accuracy": (logits.argmax(1) == labels).float().mean().item()})


@OBJECTIVES.register("colorization", modalities=("image",))
class Colorization(Objective):
    """Colourisation: from the grey image, regress its colour (Zhang, Isola & Efros 2016; regression as Larsson et al. 2016).

    The encoder sees ``g = gray(x)`` repeated to 3 channels; a linear decoder maps each token (or the
    pooled feature, as a 1×1 grid, when the encoder has no tokens) to its patch of the chroma residual
    ``x - g`` (3·p² values, image resized to the grid × ``target_patch_size``): ``L = mean ‖ĉ - (x - g)‖²``.
    ``chroma_energy`` (the loss of always predicting grey) is logged for comparison.
    """

    def __init__(self, encoders: Mapping[str, Encoder], modality: str | None = None, target_patch_size: int = 4,
                 augment: str | None = "identity", augment_kwargs: dict | None = None):
        super().__init__(encoders, modality)
        encoder = encoders[self.modality]
        if int(getattr(encoder, "in_channels", 3)) != 3:
            raise ConfigError(f"colorization needs a 3-channel image encoder, got in_channels={encoder.in_channels}; "
                              "set encoder.image.in_channels=3 and use colour data")
        self.patch = target_patch_size
        self.decoder = nn.Linear(encoder.dim, 3 * target_patch_size ** 2)
        self.augment = self.build_augment(augment, augment_kwargs)

    def forward(self, batch: Batch, encoders: Mapping[str, Encoder]) -> ObjectiveOutput:
        x = self.augment(self.inputs(batch))
        if x.shape[1] != 3:
            raise ShapeError(f"colorization needs RGB images (B, 3, H, W), got {tuple(x.shape)}")
        gray = grayscale(x).expand(-1, 3, -1, -1)  # ITU-R 601 luma, as torchvision's rgb_to_grayscale
        out = encoders[self.modality](gray)
        tokens = out.tokens if out.tokens is not None else out.pooled[:, None, :]
        target = patchify(x - gray, token_grid(tokens.shape[1], *x.shape[-2:]), self.patch)
        loss = F.mse_loss(self.decoder(tokens).float(), target.float())
        return ObjectiveOutput(loss, {"chroma_energy": target.pow(2).mean().item()})
