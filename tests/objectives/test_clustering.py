"""SwAV and DeepCluster-v2: Sinkhorn, swapped prediction, k-means and the loss against naive re-derivations."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmssl.errors import ConfigError
from mmssl.objectives.clustering import (
    deepcluster_loss,
    lookup_assignments,
    sinkhorn,
    spherical_kmeans,
    swav_loss,
)
from mmssl.registry import OBJECTIVES
from mmssl.types import Batch
from tests.objectives.conftest import TEST_AUGMENT, make_data, make_encoders

SWAV = dict(n_prototypes=6, hidden_dim=16, projection_dim=8)
DCV2 = dict(n_prototypes=[3, 4], hidden_dim=16, projection_dim=8, memory_size=32)


def _official_sinkhorn(out: np.ndarray, epsilon: float, iterations: int) -> np.ndarray:
    """main_swav.py's ``distributed_sinkhorn`` at world size 1, in numpy (the u, r, c form)."""
    q = np.exp(out / epsilon).T
    q /= q.sum()
    k, b = q.shape
    r, c = np.ones(k) / k, np.ones(b) / b
    curr = q.sum(axis=1)
    for _ in range(iterations):
        q *= (r / curr)[:, None]
        q *= (c / q.sum(axis=0))[None, :]
        curr = q.sum(axis=1)
    return (q / q.sum(axis=0, keepdims=True)).T


def test_sinkhorn_matches_the_official_code_and_its_marginals():
    g = torch.Generator().manual_seed(0)
    scores = F.normalize(torch.randn(10, 8, generator=g), dim=1) @ F.normalize(torch.randn(5, 8, generator=g), dim=1).T
    q = sinkhorn(scores, 0.05, 3)
    assert np.allclose(q.numpy(), _official_sinkhorn(scores.double().numpy(), 0.05, 3), atol=1e-5)
    assert torch.allclose(q.sum(1), torch.ones(10), atol=1e-5)  # every sample's code is a distribution
    many = sinkhorn(scores, 0.05, 200)
    assert torch.allclose(many.sum(0), torch.full((5,), 10 / 5), atol=1e-3)  # equipartition at convergence
    assert torch.allclose(sinkhorn(torch.zeros(4, 3), 0.05, 3), torch.full((4, 3), 1 / 3))  # hand case: uniform


def test_swav_loss_matches_a_loop_and_a_hand_case():
    g = torch.Generator().manual_seed(1)
    scores, codes = torch.randn(4, 3, 6, generator=g), torch.softmax(torch.randn(2, 3, 6, generator=g), -1)
    expected = 0.0
    for i in range(2):  # main_swav.py's loop: every other view predicts view i's code
        sub = 0.0
        for v in [v for v in range(4) if v != i]:
            sub -= torch.mean(torch.sum(codes[i] * torch.log(torch.softmax(scores[v] / 0.1, dim=1)), dim=1))
        expected += sub / 3
    assert torch.allclose(swav_loss(scores, codes, 0.1), expected / 2, atol=1e-5)
    # uniform scores: each prediction is uniform, CE = log K whatever the codes
    assert torch.allclose(swav_loss(torch.zeros(2, 3, 6), codes, 0.1), torch.tensor(math.log(6)))


def test_swav_loss_gradient_check():
    g = torch.Generator().manual_seed(2)
    scores = torch.randn(3, 2, 4, generator=g, dtype=torch.double, requires_grad=True)
    codes = torch.softmax(torch.randn(2, 2, 4, generator=g, dtype=torch.double), -1)
    assert torch.autograd.gradcheck(lambda s: swav_loss.__wrapped__(s, codes, 0.1), (scores,))


@pytest.mark.parametrize("modality", ["image", "audio", "text", "obs"])
def test_swav_runs_on_every_modality(modality):
    encoders = make_encoders(modality)
    swav = OBJECTIVES.build("swav", encoders, augment=TEST_AUGMENT[modality], freeze_prototypes_steps=0, **SWAV)
    out = swav(Batch({modality: make_data(modality, 6)}), encoders)
    out.loss.backward()
    assert torch.isfinite(out.loss) and swav.prototypes.weight.grad is not None
    assert all(p.grad is not None for p in encoders.parameters() if p.requires_grad)


def test_swav_forward_is_the_formula_on_its_own_parts():
    torch.manual_seed(0)
    encoders = make_encoders("obs")
    swav = OBJECTIVES.build("swav", encoders, augment="identity", **SWAV).eval()
    x = make_data("obs", 6)
    out = swav(Batch({"obs": x}), encoders)
    z = F.normalize(swav.projector(encoders["obs"](torch.cat([x, x])).pooled), dim=1)
    scores = (z @ swav.prototypes.weight.T).view(2, 6, -1)
    codes = torch.stack([sinkhorn(scores[0], 0.05, 3), sinkhorn(scores[1], 0.05, 3)])
    assert torch.allclose(out.loss, swav_loss(scores, codes, 0.1), atol=1e-5)


def test_swav_prototypes_frozen_then_trained_and_renormalised():
    torch.manual_seed(0)
    encoders = make_encoders("obs")
    swav = OBJECTIVES.build("swav", encoders, augment="identity", freeze_prototypes_steps=1, **SWAV)
    batch = Batch({"obs": make_data("obs", 6)})
    swav(batch, encoders).loss.backward()
    assert swav.prototypes.weight.grad is None  # the official "cancel gradients for the prototypes"
    with torch.no_grad():
        swav.prototypes.weight.mul_(3.0)
    swav.after_step(encoders, 0.5)
    assert torch.allclose(swav.prototypes.weight.norm(dim=1), torch.ones(6))
    swav(batch, encoders).loss.backward()
    assert swav.prototypes.weight.grad is not None


def test_swav_queue_fills_from_its_start_step_and_is_used_when_full():
    torch.manual_seed(0)
    encoders = make_encoders("obs")
    swav = OBJECTIVES.build("swav", encoders, augment="identity", queue_length=8, queue_start_step=1, **SWAV)
    batches = [Batch({"obs": make_data("obs", 4)}) for _ in range(4)]
    used = []
    for batch in batches:
        out = swav(batch, encoders)
        used.append(out.metrics["queue_in_use"])
        swav.after_step(encoders, 0.5)
    # step 0 does not enqueue; steps 1 and 2 fill the 8 rows (4 each); step 3 uses the queue
    assert used == [0.0, 0.0, 0.0, 1.0] and int(swav.queue_filled) == 8
    z = F.normalize(swav.projector(encoders["obs"](batches[3]["obs"]).pooled), dim=1)
    assert torch.allclose(swav.queue[0, :4], z, atol=1e-5)  # newest first, as the official shift


def test_spherical_kmeans_finds_separated_clusters():
    g = torch.Generator().manual_seed(0)
    centres = torch.eye(3, 8)
    labels = torch.arange(30) % 3
    x = F.normalize(centres[labels] + 0.05 * torch.randn(30, 8, generator=g), dim=1)
    centroids, found = spherical_kmeans(x, 3, 10, torch.Generator().manual_seed(1))
    for c in range(3):  # one found cluster per true cluster, centroids unit-norm near the centres
        assert found[labels == c].unique().numel() == 1
    assert found.unique().numel() == 3
    assert torch.allclose(centroids.norm(dim=1), torch.ones(3))
    assert (centroids @ centres.T).max(dim=1).values.min() > 0.99
    with pytest.raises(ConfigError, match="at least 5"):
        spherical_kmeans(x[:4], 5, 3)


def test_lookup_and_loss_against_a_naive_cross_entropy():
    assigned_index = torch.tensor([7, 2, 5, -1])
    assignments = torch.tensor([[0, 1, 2, -100], [3, 0, 1, -100]])
    labels = lookup_assignments(assigned_index, assignments, torch.tensor([5, 7, 9]))
    assert labels.tolist() == [[2, 0, -100], [1, 3, -100]]  # index 9 was not in the bank
    g = torch.Generator().manual_seed(0)
    z = F.normalize(torch.randn(3, 4, generator=g), dim=1)
    protos = [F.normalize(torch.randn(3, 4, generator=g), dim=1), F.normalize(torch.randn(4, 4, generator=g), dim=1)]
    expected = 0.0
    for c, t in zip(protos, labels):
        logp = torch.log_softmax(z @ c.T / 0.1, dim=1)
        rows = [i for i in range(3) if t[i] >= 0]
        expected += -sum(logp[i, t[i]] for i in rows) / len(rows)
    assert torch.allclose(deepcluster_loss(z, protos, labels, 0.1), expected / 2, atol=1e-5)
    zero = deepcluster_loss(z.requires_grad_(), protos, torch.full((2, 3), -100), 0.1)
    assert zero.item() == 0.0 and zero.requires_grad


def test_deepcluster_loss_gradient_check():
    g = torch.Generator().manual_seed(3)
    z = torch.randn(4, 3, generator=g, dtype=torch.double, requires_grad=True)
    protos = [torch.randn(2, 3, generator=g, dtype=torch.double)]
    targets = torch.tensor([[0, 1, -100, 1]])
    assert torch.autograd.gradcheck(lambda z: deepcluster_loss.__wrapped__(z, protos, targets, 0.1), (z,))


def _epoch_batch(x, index, epoch):
    return Batch({"obs": x[index]}, extra={"index": index, "epoch": torch.full_like(index, epoch)})


def test_deepcluster_reclusters_each_epoch_and_trains_on_last_epochs_labels():
    torch.manual_seed(0)
    encoders = make_encoders("obs")
    dc = OBJECTIVES.build("deepcluster_v2", encoders, augment="identity", **DCV2)
    x = make_data("obs", 12)
    halves = [torch.arange(6), torch.arange(6, 12)]
    outs = []
    for epoch in range(2):
        for index in halves:
            out = dc(_epoch_batch(x, index, epoch), encoders)
            out.loss.backward()
            outs.append(out)
            dc.after_step(encoders, 0.5)
            if epoch == 0 and index[0] == 6:
                bank = dc.bank[:, :12].clone()
    assert outs[0].loss.item() == 0.0 and outs[0].metrics["assigned_fraction"] == 0.0  # epoch 0 fills the bank
    assert outs[2].metrics["assigned_fraction"] == 1.0 and outs[2].loss.item() > 0
    assert int(dc.epoch) == 1 and sorted(dc.assigned_index[:12].tolist()) == list(range(12))
    # the prototypes are the k-means centroids of epoch 0's bank (head h on global view h mod 2)
    generator = torch.Generator().manual_seed(0 * 1_000_003 + 1)
    for h, k in enumerate(DCV2["n_prototypes"]):
        centroids, labels = spherical_kmeans(bank[h % 2], k, 10, generator)
        assert torch.allclose(dc.prototypes(h), centroids)
        assert torch.equal(dc.assignments[h, :12], labels)
    assert dc.prototypes(0).grad is None and "prototypes0" in dict(dc.named_buffers())


def test_deepcluster_needs_indices_and_a_big_enough_bank():
    encoders = make_encoders("obs")
    dc = OBJECTIVES.build("deepcluster_v2", encoders, augment="identity", **DCV2)
    with pytest.raises(ConfigError, match="extra\\['index'\\]"):
        dc(Batch({"obs": make_data("obs", 4)}), encoders)
    with pytest.raises(ConfigError, match="memory_size"):
        OBJECTIVES.build("deepcluster_v2", encoders, augment="identity", **{**DCV2, "memory_size": 2})


@pytest.mark.parametrize("modality", ["image", "audio", "text", "obs"])
def test_deepcluster_runs_on_every_modality(modality):
    encoders = make_encoders(modality)
    dc = OBJECTIVES.build("deepcluster_v2", encoders, augment=TEST_AUGMENT[modality], **DCV2)
    x = make_data(modality, 6)
    for epoch in range(2):
        batch = Batch({modality: x}, extra={"index": torch.arange(6), "epoch": torch.full((6,), epoch)})
        out = dc(batch, encoders)
        dc.after_step(encoders, 0.5)
    out.loss.backward()
    assert out.loss.item() > 0 and all(p.grad is not None for p in encoders.parameters() if p.requires_grad)


def test_deepcluster_warns_when_an_epoch_overflows_the_bank():
    encoders = make_encoders("obs")
    dc = OBJECTIVES.build("deepcluster_v2", encoders, augment="identity", **{**DCV2, "memory_size": 8})
    x = make_data("obs", 12)
    dc(_epoch_batch(x, torch.arange(6), 0), encoders)
    dc.after_step(encoders, 0.1)
    dc(_epoch_batch(x, torch.arange(6, 12), 0), encoders)
    with pytest.warns(UserWarning, match="memory_size=8"):
        dc.after_step(encoders, 0.2)
    assert sorted(dc.bank_index.tolist()) == list(range(4, 12))  # the 8 newest
