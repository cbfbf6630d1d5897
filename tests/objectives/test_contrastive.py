"""moco_v2, moco_v3, triplet, dcl and the InfoNCE helpers; the shared contract for every two-view objective."""

import math

import pytest
import torch
import torch.nn.functional as F

from mmssl.errors import ConfigError
from mmssl.objectives.contrastive import decoupled_nt_xent, info_nce, moco_loss, semi_hard_triplet_loss
from mmssl.registry import OBJECTIVES
from mmssl.types import Batch
from tests.objectives.conftest import TEST_AUGMENT, make_batch, make_encoders

TWO_VIEW = ("simclr", "dcl", "moco_v2", "moco_v3", "triplet", "simsiam", "barlow_twins", "vicreg")
MODALITIES = ("image", "obs", "text", "audio")


def small(name, modality):
    kwargs = dict(hidden_dim=16, projection_dim=8, augment=TEST_AUGMENT[modality])
    # triplet: a margin above the sphere's diameter keeps every triplet active, so gradients always flow
    kwargs |= {"moco_v2": dict(queue_size=16), "simsiam": dict(predictor_dim=4), "triplet": dict(margin=2.5)}.get(name, {})
    return kwargs


@pytest.mark.parametrize("modality", MODALITIES)
@pytest.mark.parametrize("name", TWO_VIEW)
def test_runs_on_every_modality_and_trains_the_encoder(name, modality):
    assert set(OBJECTIVES.get(name).modalities) == set(MODALITIES)
    encoders = make_encoders(modality)
    objective = OBJECTIVES.build(name, encoders, modality=modality, **small(name, modality))
    out = objective(make_batch(modality, 6), encoders)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert all(isinstance(v, float) for v in out.metrics.values()) and out.metrics
    out.loss.backward()
    grads = [p.grad for p in encoders.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0


@pytest.mark.parametrize("name", TWO_VIEW)
def test_batch_of_two_duplicates_stays_finite(name):
    encoders = make_encoders("obs")
    objective = OBJECTIVES.build(name, encoders, **small(name, "obs") | {"augment": "identity"})
    x = torch.randn(1, 6).repeat(2, 1)  # two identical samples, identical views
    out = objective(Batch({"obs": x}), encoders)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in encoders.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", TWO_VIEW)
def test_unreadable_modality_is_a_one_line_config_error(name):
    with pytest.raises(ConfigError) as err:
        OBJECTIVES.build(name, make_encoders("obs"), modality="depth")
    message = str(err.value)
    assert "\n" not in message and "'depth'" in message
    assert all(repr(m) in message for m in MODALITIES)  # lists what it accepts


def test_decoupled_nt_xent_hand_computed_and_naive_loop():
    e = torch.eye(2)
    t = 0.5
    loss, acc = decoupled_nt_xent(e, e.clone(), t)
    # each view: positive similarity 1, denominator = the two orthogonal views only (positive removed)
    assert loss.item() == pytest.approx(-1 / t + math.log(2), abs=1e-6) and acc.item() == 1.0

    z1, z2 = torch.randn(5, 7), torch.randn(5, 7)
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    losses = []
    for i in range(10):
        pos = (i + 5) % 10
        negatives = torch.stack([z[i] @ z[k] / 0.3 for k in range(10) if k not in (i, pos)])
        losses.append(-(z[i] @ z[pos] / 0.3) + torch.logsumexp(negatives, 0))
    assert decoupled_nt_xent(z1, z2, 0.3)[0].item() == pytest.approx(torch.stack(losses).mean().item(), rel=1e-5)


def test_info_nce_matches_naive_loop_with_extra_negatives():
    q, k, extra = torch.randn(4, 5), torch.randn(4, 5), torch.randn(3, 5)
    qn, kn, en = F.normalize(q, dim=1), F.normalize(k, dim=1), F.normalize(extra, dim=1)
    expected = []
    for i in range(4):
        logits = torch.cat([kn @ qn[i], en @ qn[i]]) / 0.1
        expected.append(-logits[i] + torch.logsumexp(logits, 0))
    loss, _ = info_nce(q, k, 0.1, negatives=extra)
    assert loss.item() == pytest.approx(torch.stack(expected).mean().item(), rel=1e-5)


def test_moco_loss_hand_computed():
    q = torch.tensor([[1.0, 0.0]])
    k = torch.tensor([[1.0, 0.0]])
    queue = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])
    t = 0.5
    loss, acc = moco_loss(q, k, queue, t)
    expected = -math.log(math.exp(2) / (math.exp(2) + math.exp(0) + math.exp(-2)))
    assert loss.item() == pytest.approx(expected, abs=1e-6) and acc.item() == 1.0


def test_moco_v2_queue_is_state_and_wraps_around():
    encoders = make_encoders("obs")
    moco = OBJECTIVES.build("moco_v2", encoders, queue_size=5, hidden_dim=16, projection_dim=8, augment="identity")
    state = moco.state_dict()
    assert state["queue"].shape == (5, 8) and int(state["queue_ptr"]) == 0
    before = moco.queue.clone()
    moco(make_batch("obs", 3), encoders)
    assert torch.equal(moco.queue, before)  # forward alone does not touch the queue
    moco.after_step(encoders, 0.1)
    assert int(moco.queue_ptr) == 3 and not torch.equal(moco.queue[:3], before[:3])
    assert torch.equal(moco.queue[3:], before[3:])
    moco(make_batch("obs", 3), encoders)
    moco.after_step(encoders, 0.2)
    assert int(moco.queue_ptr) == 1  # (3 + 3) mod 5
    assert torch.allclose(moco.queue.norm(dim=1), torch.ones(5), atol=1e-5)

    moco.eval()
    moco(make_batch("obs", 3), encoders)  # evaluation forward passes do not enqueue
    moco.after_step(encoders, 0.3)
    assert int(moco.queue_ptr) == 1

    # a fresh objective loading the checkpointed state computes the same loss (exact resume)
    clone = OBJECTIVES.build("moco_v2", encoders, queue_size=5, hidden_dim=16, projection_dim=8, augment="identity")
    clone.load_state_dict(moco.state_dict())
    batch = make_batch("obs", 3)
    assert torch.equal(clone(batch, encoders).loss, moco(batch, encoders).loss)


def test_moco_v3_value_and_momentum_schedule():
    encoders = make_encoders("obs")
    moco = OBJECTIVES.build("moco_v3", encoders, hidden_dim=16, projection_dim=8, augment="identity", temperature=0.5)
    batch = make_batch("obs", 4)
    loss = moco(batch, encoders).loss
    x = batch["obs"]
    views = torch.cat([x, x])
    q1, q2 = moco.predictor(moco.projector(encoders["obs"](views).pooled)).chunk(2)
    k1, k2 = moco.target_projector(moco.target_encoder(views).pooled).chunk(2)

    def ctr(q, k):
        logits = F.normalize(q, dim=1) @ F.normalize(k, dim=1).T / 0.5
        return 2 * 0.5 * F.cross_entropy(logits, torch.arange(len(q)))

    assert loss.item() == pytest.approx((ctr(q1, k2) + ctr(q2, k1)).item(), rel=1e-5)
    moco.after_step(encoders, 1.0)
    assert moco.momentum == pytest.approx(1.0)
    assert not any(p.requires_grad for p in moco.target_encoder.parameters())


def test_semi_hard_triplet_hand_computed():
    # 1-D embeddings: class 0 at 0.0 and 0.1, class 1 at 0.15 and 1.0; margin 0.2
    z = torch.tensor([[0.0], [0.1], [0.15], [1.0]])
    ids = torch.tensor([0, 0, 1, 1])
    loss, active = semi_hard_triplet_loss(z, ids, z, ids, torch.arange(4), margin=0.2)
    # (0,1): semi-hard negative 0.15 → 0.1-0.15+0.2 = 0.15; (1,0): negative 0.9 → 0
    # (2,3): no negative farther than 0.85 → farthest negative 0.15 → 0.85-0.15+0.2 = 0.9; (3,2): 0.9 → 0.15
    assert loss.item() == pytest.approx((0.15 + 0 + 0.9 + 0.15) / 4, abs=1e-5)
    assert active.item() == pytest.approx(0.75)


def test_triplet_uses_labels_when_present():
    encoders = make_encoders("obs")
    triplet = OBJECTIVES.build("triplet", encoders, hidden_dim=16, projection_dim=8, augment="gaussian_noise")
    batch = make_batch("obs", 4, labels=torch.zeros(4, dtype=torch.long))
    out = triplet(batch, encoders)  # one class: no negatives anywhere → nothing to learn
    assert out.loss.item() == 0.0 and out.metrics["active_triplets"] == 0.0 and out.metrics["label_supervised"] == 1.0
    batch.labels = None  # sample identities: every other sample is a negative
    triplet.margin = 10.0  # larger than any distance on the unit sphere → every triplet is active
    out = triplet(batch, encoders)
    assert out.loss.item() > 0 and out.metrics["active_triplets"] == 1.0 and out.metrics["label_supervised"] == 0.0
