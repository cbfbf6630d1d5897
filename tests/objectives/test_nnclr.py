"""NNCLR: nearest neighbours, the loss against the paper's formula written out, gradients and the support queue."""

import pytest
import torch
import torch.nn.functional as F

from mmssl.errors import ConfigError
from mmssl.objectives.nnclr import nearest_neighbours
from mmssl.registry import OBJECTIVES
from mmssl.types import Batch
from tests.objectives.conftest import TEST_AUGMENT, make_data, make_encoders

SMALL = dict(hidden_dim=16, projection_dim=8, predictor_hidden_dim=16, queue_size=10)


def test_nearest_neighbour_is_the_smallest_euclidean_distance():
    g = torch.Generator().manual_seed(0)
    z, support = F.normalize(torch.randn(5, 4, generator=g), dim=1), F.normalize(torch.randn(9, 4, generator=g), dim=1)
    brute = support[torch.cdist(z, support).argmin(dim=1)]
    assert torch.equal(nearest_neighbours(z, support), brute)
    assert torch.equal(nearest_neighbours(support[:3], support), support[:3])  # a member is its own neighbour


def _paper_loss(nn_z: torch.Tensor, p: torch.Tensor, temperature: float) -> torch.Tensor:
    """Eq. 2 of the paper, one sample at a time: -log exp(NN(zᵢ)·pᵢ/τ) / Σ_k exp(NN(zᵢ)·p_k/τ)."""
    nn_z, p = F.normalize(nn_z, dim=1), F.normalize(p, dim=1)
    terms = []
    for i in range(len(nn_z)):
        num = torch.exp(nn_z[i] @ p[i] / temperature)
        den = sum(torch.exp(nn_z[i] @ p[k] / temperature) for k in range(len(p)))
        terms.append(-torch.log(num / den))
    return torch.stack(terms).mean()


def _filled(encoders, rows=6):
    nnclr = OBJECTIVES.build("nnclr", encoders, augment="identity", **SMALL).eval()
    nnclr.queue[:rows] = F.normalize(torch.randn(rows, 8, generator=torch.Generator().manual_seed(5)), dim=1)
    nnclr.queue_ptr.fill_(rows)
    nnclr.queue_filled.fill_(rows)
    return nnclr


def test_loss_is_the_paper_formula_symmetrised():
    torch.manual_seed(0)
    encoders = make_encoders("obs")
    nnclr = _filled(encoders)
    x = make_data("obs", 6)
    out = nnclr(Batch({"obs": x}), encoders)
    z = nnclr.projector(encoders["obs"](torch.cat([x, x])).pooled)
    p1, p2 = nnclr.predictor(z).chunk(2)
    z1, z2 = F.normalize(z, dim=1).chunk(2)
    support = nnclr.queue[:6]
    nn1 = support[torch.cdist(z1, support).argmin(1)]
    nn2 = support[torch.cdist(z2, support).argmin(1)]
    expected = (_paper_loss(nn1, p2, 0.1) + _paper_loss(nn2, p1, 0.1)) / 2
    assert torch.allclose(out.loss, expected, atol=1e-5)
    assert not any(torch.equal(r, torch.zeros(8)) for r in nn1)  # unfilled (zero) rows are never neighbours


def test_gradients_flow_through_the_predictions_not_the_support_set():
    torch.manual_seed(0)
    encoders = make_encoders("obs")
    nnclr = _filled(encoders).train()
    nnclr.queue.requires_grad_(False)
    out = nnclr(Batch({"obs": make_data("obs", 6)}), encoders)
    out.loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in encoders.parameters())
    assert all(p.grad is not None for p in nnclr.predictor.parameters())
    # a central finite difference along a random direction of the predictor's last layer matches autograd
    nnclr.eval()
    batch = Batch({"obs": make_data("obs", 6)})
    weight = nnclr.predictor[-1].weight
    nnclr.zero_grad()
    nnclr(batch, encoders).loss.backward()
    d = torch.randn(weight.shape, generator=torch.Generator().manual_seed(1))
    eps = 1e-3
    with torch.no_grad():
        weight += eps * d
        up = nnclr(batch, encoders).loss
        weight -= 2 * eps * d
        down = nnclr(batch, encoders).loss
        weight += eps * d
    assert torch.allclose((up - down) / (2 * eps), (weight.grad * d).sum(), rtol=2e-2, atol=1e-4)


def test_support_queue_is_fifo_and_empty_rows_fall_back_to_the_batch():
    torch.manual_seed(0)
    encoders = make_encoders("obs")
    nnclr = OBJECTIVES.build("nnclr", encoders, augment="identity", **SMALL)
    batch = Batch({"obs": make_data("obs", 4)})
    out = nnclr(batch, encoders)
    assert out.metrics["nn_similarity"] == pytest.approx(1.0)  # empty queue: NN(z) = z
    pending = nnclr._pending.clone()
    nnclr.after_step(encoders, 0.1)
    assert torch.equal(nnclr.queue[:4], pending) and int(nnclr.queue_filled) == 4
    for _ in range(2):
        nnclr(batch, encoders)
        nnclr.after_step(encoders, 0.2)
    assert int(nnclr.queue_filled) == 10 and int(nnclr.queue_ptr) == 2  # 12 rows written into 10 slots


@pytest.mark.parametrize("modality", ["image", "audio", "text", "obs"])
def test_runs_on_every_modality(modality):
    encoders = make_encoders(modality)
    nnclr = OBJECTIVES.build("nnclr", encoders, augment=TEST_AUGMENT[modality], **SMALL)
    out = nnclr(Batch({modality: make_data(modality, 6)}), encoders)
    out.loss.backward()
    assert torch.isfinite(out.loss) and all(p.grad is not None for p in encoders.parameters() if p.requires_grad)


def test_bad_options():
    with pytest.raises(ConfigError, match="queue_size"):
        OBJECTIVES.build("nnclr", make_encoders("obs"), **{**SMALL, "queue_size": 0})
