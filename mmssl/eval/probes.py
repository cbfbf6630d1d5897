"""Frozen-feature probes: logistic-regression linear probe and cosine kNN (scikit-learn)."""

from __future__ import annotations

import numpy as np
import torch

from mmssl.data.base import ArrayDataset, iterate
from mmssl.encoders.base import Encoder
from mmssl.errors import DataError


@torch.no_grad()
def extract_features(encoder: Encoder, dataset: ArrayDataset, modality: str, batch_size: int = 512,
                     device: torch.device | str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Pooled features (N, dim) of ``dataset[modality]`` in eval mode, and labels (N,)."""
    if dataset.labels is None:
        raise DataError(f"{dataset.name} has no labels; probes need labelled data")
    was_training = encoder.training
    encoder.eval()
    feats = [encoder(b[modality].to(device)).pooled.float().cpu() for b in iterate(dataset, batch_size)]
    encoder.train(was_training)
    return torch.cat(feats).numpy(), dataset.labels.numpy()


def raw_features(dataset: ArrayDataset, modality: str) -> tuple[np.ndarray, np.ndarray]:
    """The input itself, flattened: the baseline every learned representation must beat."""
    x = dataset.all()[modality]
    return x.flatten(1).float().numpy(), dataset.labels.numpy()


def linear_probe_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                          C: float = 1.0, max_iter: int = 2000) -> float:
    """Test accuracy of multinomial logistic regression on standardised frozen features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
    probe.fit(train_x, train_y)
    return float(probe.score(test_x, test_y))


def knn_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                 k: int = 20) -> float:
    """Test accuracy of a distance-weighted kNN classifier with cosine distance."""
    from sklearn.neighbors import KNeighborsClassifier

    knn = KNeighborsClassifier(n_neighbors=min(k, len(train_x)), metric="cosine", weights="distance")
    knn.fit(train_x, train_y)
    return float(knn.score(test_x, test_y))


def probe_all(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], C: float = 1.0,
              k: int = 20) -> dict[str, float]:
    return {
        "linear_probe_accuracy": linear_probe_accuracy(*train, *test, C=C),
        "knn_accuracy": knn_accuracy(*train, *test, k=k),
    }
