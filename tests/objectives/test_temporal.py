"""CPC, temporal contrastive, temporal order and next-segment: values, labels, every modality, edge cases, errors."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmssl.encoders.base import Encoder
from mmssl.errors import ConfigError, ShapeError
from mmssl.objectives.contrastive import nt_xent
from mmssl.objectives.temporal import TemporalContrastive
from mmssl.registry import OBJECTIVES
from mmssl.types import Batch, EncoderOutput
from tests.objectives.conftest import make_batch, make_encoders

TEMPORAL = ("cpc", "temporal_contrastive", "temporal_order", "next_segment")
SMALL = {"cpc": {"context_dim": 8}, "temporal_contrastive": {"hidden_dim": 16, "projection_dim": 8},
         "temporal_order": {"hidden_dim": 8}, "next_segment": {"hidden_dim": 8}}


class ValueObs(Encoder):
    """(B, 1) observations → pooled = w·x with w = 1 at start: the feature *is* the observation's value."""

    modality, dim = "obs", 1

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1, 1))

    def encode(self, x):
        return EncoderOutput(pooled=x @ self.w)


def _build(name, modality, **kw):
    encoders = make_encoders(modality)
    return encoders, OBJECTIVES.build(name, encoders, augment="identity", **{**SMALL[name], **kw})


def _capture_head(head):
    seen = {}
    head.register_forward_hook(lambda mod, inp, out: seen.update(input=inp[0].detach(), output=out.detach()))
    return seen


# -- cpc ----------------------------------------------------------------------------------------------------
def test_cpc_matches_naive_loop():
    encoders, obj = _build("cpc", "obs", prediction_steps=2)
    x = make_batch("obs", 3, steps=5)["obs"]
    loss = obj(Batch({"obs": x}), encoders).loss
    z = encoders["obs"](x.flatten(0, 1)).pooled.view(3, 5, -1)
    context = obj.context(z)[0]
    keys = z.reshape(15, -1)
    per_k = []
    for k, predictor in enumerate(obj.predictors, start=1):
        terms = []
        for b in range(3):
            for t in range(5 - k):
                scores = keys @ predictor(context[b, t])
                terms.append(torch.logsumexp(scores, 0) - scores[b * 5 + t + k])
        per_k.append(torch.stack(terms).mean())
    assert loss.item() == pytest.approx(torch.stack(per_k).mean().item(), rel=1e-5)


def test_cpc_needs_more_steps_than_it_predicts():
    encoders, obj = _build("cpc", "obs", prediction_steps=2)
    with pytest.raises(ShapeError, match="prediction_steps"):
        obj(make_batch("obs", 2, steps=2), encoders)
    with pytest.raises(ConfigError):
        OBJECTIVES.build("cpc", encoders, prediction_steps=0)


# -- temporal_contrastive -----------------------------------------------------------------------------------
def test_temporal_contrastive_pairs_are_near_and_distinct():
    for t in (2, 3, 10):
        anchor, positive = TemporalContrastive.pairs(500, t, 3, "cpu")
        gap = (positive - anchor).abs()
        assert (gap >= 1).all() and (gap <= min(3, t - 1)).all()
        assert anchor.min() >= 0 and positive.min() >= 0 and anchor.max() < t and positive.max() < t
    with pytest.raises(ShapeError):
        TemporalContrastive.pairs(4, 1, 2, "cpu")


def test_temporal_contrastive_is_nt_xent_of_the_chosen_steps():
    encoders, obj = _build("temporal_contrastive", "obs", temperature=0.5)
    x = make_batch("obs", 4, steps=6)["obs"]
    anchor, positive = torch.tensor([0, 2, 5, 3]), torch.tensor([1, 4, 4, 1])
    obj.pairs = lambda *args: (anchor, positive)
    loss = obj(Batch({"obs": x}), encoders).loss
    rows = torch.arange(4)
    h = encoders["obs"](torch.cat([x[rows, anchor], x[rows, positive]])).pooled
    z1, z2 = obj.projector(h).chunk(2)
    assert loss.item() == pytest.approx(nt_xent(z1, z2, 0.5)[0].item(), rel=1e-6)


# -- temporal_order -----------------------------------------------------------------------------------------
def test_temporal_order_labels_say_whether_clips_are_in_order():
    encoders = nn.ModuleDict({"obs": ValueObs()})
    obj = OBJECTIVES.build("temporal_order", encoders, clip_length=3, hidden_dim=8, step_ndim=2)
    seen = _capture_head(obj.head)
    x = torch.arange(10.0).view(1, 10, 1).repeat(64, 1, 1)  # every step's feature is its time index
    loss = obj(Batch({"obs": x}), encoders).loss
    positions = seen["input"]  # (B, 3): the clips' time indices in the order shown
    ordered = (positions.diff(dim=1) > 0).all(1)
    assert ordered.any() and not ordered.all()  # both classes are shown
    assert ((positions.diff(dim=1).abs() == 1).sum(1) >= 1).all()  # consecutive steps, permuted
    assert sorted(positions[0].tolist()) == list(range(int(positions[0].min()), int(positions[0].min()) + 3))
    expected = F.binary_cross_entropy_with_logits(seen["output"].squeeze(1), ordered.float())
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert obj.permutations[0].tolist() == [0, 1, 2]


# -- next_segment -------------------------------------------------------------------------------------------
def test_next_segment_labels_say_whether_b_continues_a():
    encoders = nn.ModuleDict({"obs": ValueObs()})
    obj = OBJECTIVES.build("next_segment", encoders, segment_length=2, hidden_dim=8)
    seen = _capture_head(obj.head)
    b, t = 32, 9
    x = (100.0 * torch.arange(b).view(b, 1, 1) + torch.arange(float(t)).view(1, t, 1))  # sample·100 + step
    loss = obj(Batch({"obs": x}), encoders).loss
    a, second = seen["input"][:, 0], seen["input"][:, 1]  # mean feature of segment A and of the candidate
    follows = (second - a) == 2  # the continuation starts 2 steps after A in the same sample
    assert follows.any() and not follows.all()
    assert ((second - a).abs()[~follows] > 50).all()  # negatives come from other samples
    expected = F.binary_cross_entropy_with_logits(seen["output"].squeeze(1), follows.float())
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_segments_must_fit():
    encoders, obj = _build("next_segment", "obs", segment_length=3)
    with pytest.raises(ShapeError, match="segment"):
        obj(make_batch("obs", 2, steps=5), encoders)
    encoders, obj = _build("temporal_order", "obs")
    with pytest.raises(ShapeError, match="segment"):
        obj(make_batch("obs", 2, steps=2), encoders)


# -- every declared layout, gradients, edge cases -----------------------------------------------------------
LAYOUTS = [("obs", 8), ("image", 4), ("text", None), ("audio", None), ("text", 3)]


@pytest.mark.parametrize("name", TEMPORAL)
@pytest.mark.parametrize("modality,steps", LAYOUTS)
def test_runs_and_trains_the_encoder(name, modality, steps):
    kw = {"prediction_steps": 1} if name == "cpc" and modality == "text" and steps == 3 else {}
    encoders, obj = _build(name, modality, **kw)
    out = obj(make_batch(modality, 4, steps=steps), encoders)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert all(isinstance(v, float) for v in out.metrics.values()) and out.metrics
    out.loss.backward()
    grads = [p.grad for p in encoders.parameters() if p.grad is not None]
    assert grads and sum(g.abs().sum() for g in grads) > 0


@pytest.mark.parametrize("name", TEMPORAL)
def test_image_tokens_and_raw_waveforms(name):
    if name in ("temporal_order", "next_segment"):  # raw audio is cut into waveform slices, each encoded
        encoders, obj = _build(name, "audio")
        out = obj(make_batch("audio", 2), encoders)
    else:  # the conv net's 2×2 token grid, row-major, is the sequence
        encoders, obj = _build(name, "image", **({"prediction_steps": 1} if name == "cpc" else {}))
        out = obj(make_batch("image", 2), encoders)
    assert torch.isfinite(out.loss)


@pytest.mark.parametrize("name", TEMPORAL)
def test_batch_of_two_duplicates_is_finite(name):
    encoders, obj = _build(name, "obs")
    x = make_batch("obs", 1, steps=6)["obs"].repeat(2, 1, 1)
    out = obj(Batch({"obs": x}), encoders)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert all(torch.isfinite(p.grad).all() for p in encoders.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", TEMPORAL)
def test_unreadable_inputs_and_modalities_are_one_line_errors(name):
    encoders, obj = _build(name, "obs")
    with pytest.raises(ShapeError) as info:
        obj(Batch({"obs": torch.randn(2, 3, 4, 6)}), encoders)
    assert "\n" not in str(info.value) and "step_ndim" in str(info.value)
    with pytest.raises(ConfigError) as info:
        OBJECTIVES.build(name, encoders, modality="depth")
    assert "\n" not in str(info.value) and "'obs'" in str(info.value)
    with pytest.raises(ConfigError, match="encoder for 'text'"):
        OBJECTIVES.build(name, encoders, modality="text")
    assert OBJECTIVES.get(name).sequence


def test_cpc_learns_to_pick_the_future_of_rotating_points():
    """Points circling at ±0.6 rad/step with random phase and radius: after training, CPC picks z_{t+k} among all B·T
    encodings far above chance (1/256)."""
    g = torch.Generator().manual_seed(0)

    def trajectories(b, steps=8):
        radius = 0.5 + 1.5 * torch.rand(b, 1, 1, generator=g)  # per sequence, so states rarely coincide
        speed = torch.where(torch.rand(b, 1, generator=g) < 0.5, -0.6, 0.6)
        angle = torch.rand(b, 1, generator=g) * 6.283 + speed * torch.arange(steps)
        circle = radius * torch.stack([angle.cos(), angle.sin()], -1)
        return torch.cat([circle, 0.05 * torch.randn(b, steps, 4, generator=g)], -1)

    encoders, obj = _build("cpc", "obs", prediction_steps=2, context_dim=32)
    opt = torch.optim.Adam([*encoders.parameters(), *obj.parameters()], lr=1e-2)
    with torch.no_grad():
        before = obj(Batch({"obs": trajectories(32)}), encoders).metrics["prediction_accuracy"]
    for _ in range(100):
        out = obj(Batch({"obs": trajectories(32)}), encoders)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    with torch.no_grad():
        after = obj(Batch({"obs": trajectories(32)}), encoders).metrics["prediction_accuracy"]
    assert after > 0.08 and after > before + 0.05, (before, after)  # measured 0.15–0.24 over 3 seeds


@pytest.mark.parametrize("name", ["temporal_order", "next_segment"])
def test_segment_objectives_refuse_raw_images(name):
    encoders, obj = _build(name, "image")
    with pytest.raises(ConfigError, match=r"\(B, T, C, H, W\)"):
        obj(make_batch("image", 2), encoders)


def test_next_segment_batch_of_one_uses_the_swapped_pair_as_negative():
    encoders = nn.ModuleDict({"obs": ValueObs()})
    obj = OBJECTIVES.build("next_segment", encoders, segment_length=2, hidden_dim=8).eval()  # BN head: one sample
    seen = _capture_head(obj.head)
    x = torch.arange(8.0).view(1, 8, 1)
    gaps = []
    for _ in range(20):
        obj(Batch({"obs": x}), encoders)
        gaps.append((seen["input"][0, 1] - seen["input"][0, 0]).item())  # candidate − A
    assert set(gaps) == {2.0, -2.0}  # the continuation (follows) or A's own predecessor order swapped
