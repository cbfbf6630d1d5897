"""A dataset's items made the shape a pretrained encoder reads (transfer to another dataset, fine-tuning).

Images change channels (grey ↔ RGB) and size; any other modality must already match, else a one-line
``DataError`` says what to set.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmssl.data.base import ArrayDataset
from mmssl.errors import DataError
from mmssl.types import AUDIO, IMAGE

_LUMA = torch.tensor([0.299, 0.587, 0.114])  # ITU-R 601, as mmssl.augment.image.grayscale


def adapt_images(images: torch.Tensor, channels: int, size: tuple[int, int]) -> torch.Tensor:
    """(N, C, H, W) uint8/float images → (N, ``channels``, *size) of the same dtype.

    Grey → RGB repeats the channel; RGB → grey takes luma (ITU-R 601); resizing is bilinear with
    antialiasing so that downsampling (28×28 → 8×8) averages instead of aliasing.
    """
    if images.ndim != 4:
        raise DataError(f"transfer needs images (N, C, H, W), got shape {tuple(images.shape)}")
    dtype, x = images.dtype, images.float()
    if x.shape[1] != channels:
        if x.shape[1] == 1:
            x = x.expand(-1, channels, -1, -1)
        elif x.shape[1] == 3 and channels == 1:
            x = (x * _LUMA.view(1, 3, 1, 1)).sum(dim=1, keepdim=True)
        else:
            raise DataError(f"cannot adapt {x.shape[1]}-channel images to an encoder that reads {channels} "
                            "channels; pretrain on data with matching channels")
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    return x.round().clamp(0, 255).to(dtype) if dtype == torch.uint8 else x.contiguous()


def adapt_dataset(dataset: ArrayDataset, modality: str, shape: tuple[int, ...]) -> ArrayDataset:
    """``dataset`` with its ``modality`` tensor made to have per-item ``shape`` (images only), else a clear error."""
    x = dataset.data[modality]
    if tuple(x.shape[1:]) == tuple(shape):
        return dataset
    if modality != IMAGE or len(shape) != 3:
        hint = ("read the clips as in pretraining: leave data.sample_rate and data.clip_seconds unset (they "
                "default to the run's)" if modality == AUDIO else "only images and audio can be adapted")
        raise DataError(f"{dataset.name}: {modality} items have shape {tuple(x.shape[1:])} but the encoder was "
                        f"pretrained on {tuple(shape)}; {hint}")
    data = dict(dataset.data) | {modality: adapt_images(x, shape[0], tuple(shape[1:]))}
    return ArrayDataset(data, dataset.labels, dataset.classes, dataset.name, dataset.extra)
