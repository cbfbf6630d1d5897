"""Datasets (registered in ``mmssl.registry.DATASETS``) and the batch iterator."""

from mmssl.data import audio, images, manifest, shards, text, trimodal  # noqa: F401  (registers)
from mmssl.data.base import ArrayDataset, BatchIterator, DatasetSplits, iterate

__all__ = ["ArrayDataset", "BatchIterator", "DatasetSplits", "iterate"]
