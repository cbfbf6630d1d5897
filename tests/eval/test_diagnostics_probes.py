import numpy as np
import pytest
import torch

from mmssl.eval.diagnostics import alignment, effective_rank, uniformity
from mmssl.eval.probes import knn_accuracy, linear_probe_accuracy


def test_effective_rank_extremes():
    collapsed = torch.randn(100, 1) @ torch.randn(1, 16)
    assert effective_rank(collapsed) == pytest.approx(1.0, abs=1e-3)
    # equal singular values in k orthogonal directions → rank k
    q, _ = torch.linalg.qr(torch.randn(64, 64))
    features = q[:, :8] * 3.0
    assert effective_rank(features) == pytest.approx(8.0, rel=0.02)


def test_alignment_and_uniformity():
    z = torch.randn(50, 8)
    assert alignment(z, z) == pytest.approx(0.0, abs=1e-12)
    assert alignment(z, -z) == pytest.approx(4.0)  # opposite unit vectors: distance 2, squared 4
    same = torch.ones(10, 4)
    assert uniformity(same) == pytest.approx(0.0, abs=1e-9)  # all pairs at distance 0 → log 1
    assert uniformity(torch.randn(200, 4)) < -1.0


def test_probes_separate_separable_data():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (50, 5)), rng.normal(6, 1, (50, 5))])
    y = np.array([0] * 50 + [1] * 50)
    idx = rng.permutation(100)
    tr, te = idx[:70], idx[70:]
    assert linear_probe_accuracy(x[tr], y[tr], x[te], y[te]) == 1.0
    assert knn_accuracy(x[tr], y[tr], x[te], y[te], k=5) == 1.0
    y_shuffled = rng.permutation(y)
    assert linear_probe_accuracy(x[tr], y_shuffled[tr], x[te], y_shuffled[te]) < 0.8
