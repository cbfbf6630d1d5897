"""Each objective against the formula of its authors' official code, written out naively on fixed inputs.

Where the paper's printed equation and the code differ, mmssl follows the code (and the docstring says
so); the one deliberate exception is recorded here too: SimCLR's value is the paper's/lightly's mean,
exactly half of the TF code's ``loss_a + loss_b``. Sources: facebookresearch/vicreg main_vicreg.py,
facebookresearch/barlowtwins main.py, google-research/simclr objective.py, facebookresearch/moco
builder.py, facebookresearch/moco-v3 moco/builder.py, deepmind byol byol_experiment.py,
facebookresearch/simsiam main_simsiam.py, mlfoundations/open_clip loss.py, google-research/big_vision
(SigLIP), lightly DCLLoss.
"""

import inspect
import math

import pytest
import torch
import torch.nn.functional as F

from mmssl.objectives.contrastive import decoupled_nt_xent, moco_loss, nt_xent
from mmssl.objectives.crossmodal import clip_loss, siglip_loss
from mmssl.objectives.noncontrastive import barlow_twins_loss, vicreg_loss
from mmssl.registry import OBJECTIVES
from mmssl.types import Batch
from tests.objectives.conftest import make_batch, make_encoders

G = torch.Generator().manual_seed(1234)
Z1, Z2 = torch.randn(6, 4, generator=G), torch.randn(6, 4, generator=G)


def _default(name, key):
    return inspect.signature(OBJECTIVES.get(name).obj).parameters[key].default


def _ce(logits_row, target):
    return -(logits_row[target] - math.log(sum(math.exp(v) for v in logits_row)))


def _off_diagonal(m):
    n = m.shape[0]
    return [float(m[i, j]) for i in range(n) for j in range(n) if i != j]


def test_vicreg_matches_official_code_variance_averaged():
    def official(x, y, sim=25.0, std=25.0, cov=1.0):
        n, d = x.shape
        repr_loss = F.mse_loss(x, y)
        x, y = x - x.mean(0), y - y.mean(0)
        std_x, std_y = torch.sqrt(x.var(0) + 0.0001), torch.sqrt(y.var(0) + 0.0001)
        std_loss = torch.mean(F.relu(1 - std_x)) / 2 + torch.mean(F.relu(1 - std_y)) / 2
        cov_x, cov_y = x.T @ x / (n - 1), y.T @ y / (n - 1)
        cov_loss = sum(v ** 2 for v in _off_diagonal(cov_x)) / d + sum(v ** 2 for v in _off_diagonal(cov_y)) / d
        return float(sim * repr_loss + std * std_loss) + cov * cov_loss

    small = 0.3 * Z1, 0.2 * Z2  # std < 1: the variance hinge is active
    for a, b in [(Z1, Z2), small]:
        assert vicreg_loss(a, b, 25.0, 25.0, 1.0)[0].item() == pytest.approx(official(a, b), rel=1e-5)
    assert (_default("vicreg", "sim_weight"), _default("vicreg", "var_weight"), _default("vicreg", "cov_weight")) == (25.0, 25.0, 1.0)


def test_barlow_twins_matches_official_code_and_lambda():
    def official(z1, z2, lambd):
        bn = torch.nn.BatchNorm1d(z1.shape[1], affine=False).train()
        c = bn(z1).T @ bn(z2) / z1.shape[0]
        on_diag = sum((float(c[i, i]) - 1) ** 2 for i in range(c.shape[0]))
        off_diag = sum(v ** 2 for v in _off_diagonal(c))
        return on_diag + lambd * off_diag

    assert barlow_twins_loss(Z1, Z2, 0.0051)[0].item() == pytest.approx(official(Z1, Z2, 0.0051), rel=1e-5)
    assert _default("barlow_twins", "lambda_offdiag") == 0.0051  # the code's --lambd (paper: 5e-3)


def test_simclr_is_half_the_tf_code_and_equal_to_the_paper_mean():
    tau = 0.5

    def tf_official(h1, h2):
        h1, h2 = F.normalize(h1, dim=1), F.normalize(h2, dim=1)
        n = len(h1)
        big = 1e9
        aa, bb = h1 @ h1.T / tau - torch.eye(n) * big, h2 @ h2.T / tau - torch.eye(n) * big
        ab, ba = h1 @ h2.T / tau, h2 @ h1.T / tau
        loss_a = sum(_ce(torch.cat([ab[i], aa[i]]).tolist(), i) for i in range(n)) / n
        loss_b = sum(_ce(torch.cat([ba[i], bb[i]]).tolist(), i) for i in range(n)) / n
        return loss_a + loss_b

    ours = nt_xent(Z1, Z2, tau)[0].item()
    assert 2 * ours == pytest.approx(tf_official(Z1, Z2), rel=1e-5)


def test_moco_v2_matches_official_one_direction():
    q, k = F.normalize(Z1, dim=1), F.normalize(Z2, dim=1)
    queue = F.normalize(torch.randn(5, 4, generator=G), dim=1)
    t = 0.2
    expected = sum(_ce([float(q[i] @ k[i]) / t] + [float(q[i] @ queue[j]) / t for j in range(5)], 0) for i in range(6)) / 6
    assert moco_loss(q, k, queue, t)[0].item() == pytest.approx(expected, rel=1e-5)

    # the objective: queries of view 1 against keys of view 2 only (the code's q = f_q(im_q), k = f_k(im_k))
    assert _default("moco_v2", "symmetric") is False
    encoders = make_encoders("obs")
    moco = OBJECTIVES.build("moco_v2", encoders, queue_size=5, hidden_dim=8, projection_dim=4,
                            augment="gaussian_noise", augment_kwargs={"std": 0.5})
    x = make_batch("obs", 6)["obs"]
    torch.manual_seed(5)
    loss = moco(Batch({"obs": x}), encoders).loss.item()
    torch.manual_seed(5)
    v1, v2 = moco.augment(x), moco.augment(x)
    with torch.no_grad():
        q1 = F.normalize(moco.projector(encoders["obs"](v1).pooled), dim=1)
        k2 = F.normalize(moco.target_projector(moco.target_encoder(v2).pooled), dim=1)
        expected = sum(_ce([float(q1[i] @ k2[i]) / 0.2] + [float(q1[i] @ moco.queue[j]) / 0.2 for j in range(5)], 0)
                       for i in range(6)) / 6
    assert loss == pytest.approx(expected, rel=1e-5)


def _two_view_internals(objective, encoders, x):
    views = torch.cat([x, x])
    online = objective.projector(encoders["obs"](views).pooled)
    target_encoder = getattr(objective, "target_encoder", None)
    with torch.no_grad():
        target = objective.target_projector(target_encoder(views).pooled) if target_encoder is not None else None
    return online, target


def test_moco_v3_matches_official_ctr():
    encoders = make_encoders("obs")
    moco = OBJECTIVES.build("moco_v3", encoders, hidden_dim=8, projection_dim=4, augment="identity", temperature=0.2)
    x = make_batch("obs", 6)["obs"]
    loss = moco(Batch({"obs": x}), encoders).loss.item()
    online, keys = _two_view_internals(moco, encoders, x)
    with torch.no_grad():
        q1, q2 = F.normalize(moco.predictor(online), dim=1).chunk(2)
        k1, k2 = F.normalize(keys, dim=1).chunk(2)

    def ctr(q, k, t=0.2):  # logits = q kᵀ / T, labels = arange, CE · 2T
        logits = (q @ k.T / t).tolist()
        return sum(_ce(row, i) for i, row in enumerate(logits)) / len(logits) * 2 * t

    assert loss == pytest.approx(ctr(q1, k2) + ctr(q2, k1), rel=1e-5)


def test_byol_sums_the_two_directions_as_official():
    encoders = make_encoders("obs")
    byol = OBJECTIVES.build("byol", encoders, hidden_dim=8, projection_dim=4, augment="identity")
    x = make_batch("obs", 6)["obs"]
    loss = byol(Batch({"obs": x}), encoders).loss.item()
    online, target = _two_view_internals(byol, encoders, x)
    with torch.no_grad():
        p1, p2 = byol.predictor(online).chunk(2)
        t1, t2 = target.chunk(2)

    def regression(p, z):  # 2 - 2·cos per sample, batch mean
        return sum(2 - 2 * float(F.cosine_similarity(p[i:i + 1], z[i:i + 1])) for i in range(len(p))) / len(p)

    assert loss == pytest.approx(regression(p1, t2) + regression(p2, t1), rel=1e-5)


def test_simsiam_matches_official_half_sum():
    encoders = make_encoders("obs")
    simsiam = OBJECTIVES.build("simsiam", encoders, hidden_dim=8, projection_dim=4, predictor_dim=2, augment="identity")
    x = make_batch("obs", 6)["obs"]
    loss = simsiam(Batch({"obs": x}), encoders).loss.item()
    z, _ = _two_view_internals(simsiam, encoders, x)
    with torch.no_grad():
        z1, z2 = z.chunk(2)
        p1, p2 = simsiam.predictor(z1), simsiam.predictor(z2)
    expected = -(F.cosine_similarity(p1, z2).mean() + F.cosine_similarity(p2, z1).mean()).item() * 0.5
    assert loss == pytest.approx(expected, rel=1e-5)


def test_clip_and_siglip_match_their_reference_formulas_and_inits():
    a, b = F.normalize(Z1, dim=1), F.normalize(Z2, dim=1)
    scale = torch.tensor(1 / 0.07)
    logits = (scale * a @ b.T).tolist()
    logits_t = (scale * b @ a.T).tolist()
    expected = 0.5 * (sum(_ce(r, i) for i, r in enumerate(logits)) + sum(_ce(r, i) for i, r in enumerate(logits_t))) / 6
    assert clip_loss(a, b, scale).item() == pytest.approx(expected, rel=1e-5)
    assert _default("clip", "temperature") == 0.07  # CLIP's τ init; clamped at 1/100 as in the paper

    s, bias = torch.tensor(10.0), torch.tensor(-10.0)
    expected = 0.0
    for i in range(6):
        for j in range(6):
            z = 1.0 if i == j else -1.0
            expected -= math.log(1 / (1 + math.exp(-z * (10.0 * float(a[i] @ b[j]) - 10.0))))
    assert siglip_loss(a, b, s, bias).item() == pytest.approx(expected / 6, rel=1e-5)
    assert (_default("siglip", "temperature"), _default("siglip", "bias")) == (0.1, -10.0)  # t' = log 10, b = -10


def test_dcl_matches_lightly_dclloss():
    tau = 0.1

    def one_side(o0, o1):
        o0, o1 = F.normalize(o0, dim=1), F.normalize(o1, dim=1)
        n = len(o0)
        total = 0.0
        for i in range(n):
            negatives = [float(o0[i] @ o1[j]) / tau for j in range(n) if j != i]
            negatives += [float(o0[i] @ o0[j]) / tau for j in range(n) if j != i]
            total += -float(o0[i] @ o1[i]) / tau + math.log(sum(math.exp(v) for v in negatives))
        return total / n

    expected = 0.5 * (one_side(Z1, Z2) + one_side(Z2, Z1))
    assert decoupled_nt_xent(Z1, Z2, tau)[0].item() == pytest.approx(expected, rel=1e-5)


def test_scale_free_defaults_follow_the_papers():
    assert _default("triplet", "margin") == 0.2  # FaceNet
    assert (_default("context_encoder", "rec_weight"), _default("context_encoder", "adv_weight")) == (0.999, 0.001)
    assert _default("masked_image", "mask_ratio") == 0.6  # SimMIM
