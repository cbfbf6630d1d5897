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


# ---- the second round: DINO, SwAV, DeepCluster-v2, NNCLR, MAE, I-JEPA, data2vec ------------------------------
# Sources: facebookresearch/dino main_dino.py (DINOLoss, args) and utils.py (cosine_scheduler);
# facebookresearch/swav main_swav.py (distributed_sinkhorn, the loss loop) and main_deepclusterv2.py;
# the NNCLR paper's eq. 1 (Dwibedi et al. 2021, no official code); facebookresearch/mae models_mae.py
# (random_masking, forward_loss); facebookresearch/ijepa src/masks/multiblock.py and src/train.py;
# facebookresearch/fairseq examples/data2vec (data2vec_audio.py / data2vec_text.py, get_annealed_rate).

K8 = torch.randn(3, 5, 8, generator=G)  # (views, batch, prototypes/outputs): 2 global + 1 local


def test_dino_loss_center_and_schedules_match_official_code():
    from mmssl.objectives.base import cosine_momentum
    from mmssl.objectives.dino import dino_loss

    student, teacher, center = K8, 2.0 * K8[:2] + 0.1, torch.randn(8, generator=G)

    def official(student_out, teacher_out, center, student_temp=0.1, teacher_temp=0.04):  # DINOLoss.forward
        s = (student_out / student_temp).chunk(3)
        t = F.softmax((teacher_out - center) / teacher_temp, dim=-1).chunk(2)
        total, n = 0.0, 0
        for iq, q in enumerate(t):
            for v in range(len(s)):
                if v == iq:
                    continue
                total += torch.sum(-q * F.log_softmax(s[v], dim=-1), dim=-1).mean()
                n += 1
        return float(total / n)

    loss, _ = dino_loss(student, teacher, center, 0.1, 0.04)
    assert loss.item() == pytest.approx(official(student.reshape(15, 8), teacher.reshape(10, 8), center), rel=1e-5)
    # the centre: update_center's EMA of the batch mean of the raw teacher outputs (both global views)
    dino = OBJECTIVES.build("dino", make_encoders("image"), out_dim=8, hidden_dim=16, bottleneck_dim=4,
                            warmup_teacher_temp=0.04, teacher_temp=0.07, warmup_teacher_temp_steps=10)
    assert dino.center_momentum == 0.9
    # the teacher temperature: linear from 0.04 to 0.07, then constant (official np.linspace per epoch
    # reaches 0.07 one epoch earlier: linspace(…, n) ends at index n - 1; here it ends at step n)
    for step, expected in ((0, 0.04), (5, 0.055), (10, 0.07), (50, 0.07)):
        dino.step.fill_(step)
        assert dino.teacher_temperature() == pytest.approx(expected)
    # the teacher EMA: utils.cosine_scheduler(0.996, 1, …) = final + ½(base - final)(1 + cos(π·i/I))
    for p in (0.0, 0.25, 0.5, 1.0):
        assert cosine_momentum(0.996, p) == pytest.approx(1 + 0.5 * (0.996 - 1) * (1 + math.cos(math.pi * p)))
    # main_dino.py's argparse defaults (the ViT-S/16 recipe), and mmssl's signature defaults
    assert [_default("dino", k) for k in ("out_dim", "student_temp", "teacher_temp", "warmup_teacher_temp",
                                          "center_momentum", "momentum", "bottleneck_dim", "hidden_dim")] == \
        [65536, 0.1, 0.04, 0.04, 0.9, 0.996, 256, 2048]


def test_swav_sinkhorn_and_loss_match_official_code():
    from mmssl.objectives.clustering import sinkhorn, swav_loss

    def official_sinkhorn(out, epsilon=0.05, iterations=3):  # distributed_sinkhorn, world size 1
        q = torch.exp(out / epsilon).t()
        b, k = q.shape[1], q.shape[0]
        q /= torch.sum(q)
        for _ in range(iterations):
            q /= torch.sum(q, dim=1, keepdim=True)
            q /= k
            q /= torch.sum(q, dim=0, keepdim=True)
            q /= b
        q *= b
        return q.t()

    scores = 0.2 * K8  # cosines are in [-1, 1]: exp(s/0.05) stays finite in the naive official form
    for view in range(2):
        assert torch.allclose(sinkhorn(scores[view], 0.05, 3), official_sinkhorn(scores[view].clone()), atol=1e-6)
    codes = torch.stack([official_sinkhorn(scores[v].clone()) for v in range(2)])
    total = 0.0
    for crop_id in range(2):  # crops_for_assign = [0, 1]
        sub = 0.0
        for v in [v for v in range(3) if v != crop_id]:
            sub -= torch.mean(torch.sum(codes[crop_id] * F.log_softmax(scores[v] / 0.1, dim=1), dim=1))
        total += sub / (3 - 1)
    assert swav_loss(scores, codes, 0.1).item() == pytest.approx(float(total / 2), rel=1e-5)
    # main_swav.py's defaults: τ 0.1, ε 0.05, 3 iterations, 3000 prototypes, feat_dim 128, hidden_mlp 2048,
    # freeze_prototypes_niters 313, queue_length 0 (off)
    assert [_default("swav", k) for k in ("temperature", "epsilon", "sinkhorn_iterations", "n_prototypes",
                                          "projection_dim", "hidden_dim", "freeze_prototypes_steps",
                                          "queue_length")] == [0.1, 0.05, 3, 3000, 128, 2048, 313, 0]


def test_deepcluster_v2_loss_matches_official_code():
    from mmssl.objectives.clustering import deepcluster_loss

    z = F.normalize(K8.reshape(15, 8), dim=1)
    prototypes = [F.normalize(torch.randn(4, 8, generator=G), dim=1) for _ in range(3)]
    targets = torch.randint(0, 4, (3, 15), generator=G)
    targets[1, :3] = -100  # not yet assigned: ignored, as the official ignore_index=-100
    loss = 0.0
    for h in range(3):  # main_deepclusterv2.py: loss += cross_entropy(output[h] / τ, targets); loss /= heads
        loss += F.cross_entropy(z @ prototypes[h].T / 0.1, targets[h], ignore_index=-100)
    assert deepcluster_loss(z, prototypes, targets, 0.1).item() == pytest.approx(float(loss / 3), rel=1e-5)
    assert [_default("deepcluster_v2", k) for k in ("temperature", "n_prototypes", "projection_dim",
                                                    "kmeans_iterations")] == [0.1, (3000, 3000, 3000), 128, 10]


def test_nnclr_matches_the_paper_equation():
    """Eq. 1: ``-log exp(NN(z_i, Q)·p_i⁺/τ) / Σ_k exp(NN(z_i, Q)·p_k⁺/τ)``, symmetrised (½ the two directions).

    Lightly's example feeds (NN(z₀), p₁) to NTXentLoss, which also counts the other queries as negatives
    (2N−2 of them); mmssl follows the paper's equation (keys of the other view only)."""
    from mmssl.objectives.contrastive import info_nce
    from mmssl.objectives.nnclr import nearest_neighbours

    z1, p2 = F.normalize(Z1, dim=1), F.normalize(Z2, dim=1)
    support = F.normalize(torch.randn(9, 4, generator=G), dim=1)
    nn1 = nearest_neighbours(z1, support)
    for i in range(6):  # the neighbour by the official smallest L2 distance between unit vectors
        assert torch.equal(nn1[i], support[torch.cdist(z1[i:i + 1], support).argmin()])
    expected = sum(_ce([float(nn1[i] @ p2[k]) / 0.1 for k in range(6)], i) for i in range(6)) / 6
    assert info_nce(nn1, p2, 0.1)[0].item() == pytest.approx(expected, rel=1e-5)
    assert (_default("nnclr", "temperature"), _default("nnclr", "queue_size"), _default("nnclr", "projection_dim"),
            _default("nnclr", "predictor_hidden_dim")) == (0.1, 98304, 256, 4096)


def test_mae_masking_and_norm_pix_target_match_official_code():
    """models_mae.py's random_masking and forward_loss's norm_pix target (unbiased var, ε 1e-6). The official
    argparse default of ``--norm_pix_loss`` is off, but the paper's numbers and README commands use it: mmssl
    defaults to on (``normalize_target=True``)."""
    from mmssl.objectives.mae import mae_random_masking, normalise_patches

    torch.manual_seed(3)
    keep, mask, restore = mae_random_masking(4, 16, 0.75)
    torch.manual_seed(3)
    noise = torch.rand(4, 16)  # random_masking: len_keep = int(L·(1 - ratio)), argsort of U(0, 1) noise
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    official_mask = torch.ones(4, 16)
    official_mask[:, :4] = 0
    official_mask = torch.gather(official_mask, 1, ids_restore)
    assert torch.equal(keep, ids_shuffle[:, :4]) and torch.equal(mask, official_mask) and torch.equal(restore, ids_restore)
    target = torch.randn(2, 16, 12, generator=G)
    mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
    assert torch.allclose(normalise_patches(target), (target - mean) / (var + 1.e-6) ** .5, atol=1e-6)
    assert (_default("mae", "mask_ratio"), _default("mae", "normalize_target")) == (0.75, True)


def test_ijepa_block_sizes_and_ema_match_official_code():
    """multiblock.py's _sample_block_size (one u for scale and a linear aspect; h, w reduced below the grid).
    The official EMA is linear from 0.996 over ``ipe·epochs·ipe_scale`` iterations with ipe_scale 1.25,
    so it ends at 0.996 + 0.004/1.25 = 0.9992; mmssl's reaches ``momentum_end`` (1) at the last step."""
    from mmssl.objectives.ijepa import block_size

    def official(height, width, scale, aspect_ratio_scale):
        _rand = torch.rand(1).item()
        max_keep = int(height * width * (scale[0] + _rand * (scale[1] - scale[0])))
        aspect_ratio = aspect_ratio_scale[0] + _rand * (aspect_ratio_scale[1] - aspect_ratio_scale[0])
        h, w = int(round(math.sqrt(max_keep * aspect_ratio))), int(round(math.sqrt(max_keep / aspect_ratio)))
        while h >= height:
            h -= 1
        while w >= width:
            w -= 1
        return h, w

    for seed in range(20):
        for grid, scale, aspect in (((14, 14), (0.15, 0.2), (0.75, 1.5)), ((14, 14), (0.85, 1.0), (1.0, 1.0)),
                                    ((8, 8), (0.15, 0.2), (0.75, 1.5))):
            torch.manual_seed(seed)
            ours = block_size(*grid, scale, aspect)
            torch.manual_seed(seed)
            assert ours == official(*grid, scale, aspect), (seed, grid, scale)
    assert [_default("ijepa", k) for k in ("num_targets", "target_scale", "target_aspect", "context_scale",
                                           "momentum", "momentum_end")] == [4, (0.15, 0.2), (0.75, 1.5), (0.85, 1.0),
                                                                            0.996, 1.0]


def test_data2vec_targets_loss_and_ema_match_official_code():
    """fairseq data2vec: ``y = mean of F.instance_norm(top-K layer outputs)`` (T×B×C permuted to B×C×T),
    the loss ``Σ_D mse / √D`` averaged over masked positions, τ annealed linearly (get_annealed_rate) from
    ema_decay 0.999 to ema_end_decay 0.9999. average_top_k_layers is 8 of 12 blocks there; mmssl's default
    3 suits its 4-block vit_tiny (the same ≈ top two thirds)."""
    from mmssl.objectives.data2vec import data2vec_targets, regression_loss

    layers = [torch.randn(2, 5, 4, generator=G) for _ in range(4)]  # (B, T, C) per block
    tbc = [a.transpose(0, 1) for a in layers]  # fairseq's layer results are T×B×C
    official = [F.instance_norm(tl.permute(1, 2, 0).float()) for tl in tbc[-3:]]  # B×C×T
    y = (sum(official) / len(official)).transpose(1, 2)  # back to B×T×C
    assert torch.allclose(data2vec_targets(layers, 3), y, atol=1e-6)
    x, t = torch.randn(7, 4, generator=G), torch.randn(7, 4, generator=G)
    official_loss = F.mse_loss(x, t, reduction="none").sum(dim=-1).sum() * (1 / math.sqrt(4)) / 7
    assert regression_loss(x, t, 0.0).item() == pytest.approx(official_loss.item(), rel=1e-6)

    def get_annealed_rate(start, end, curr_step, total_steps):
        return end - (end - start) * (1 - curr_step / total_steps)

    from tests.objectives.patch_helpers import vit_encoders

    encoders = vit_encoders()
    d2v = OBJECTIVES.build("data2vec", encoders, top_k=1)
    for progress in (0.0, 0.3, 1.0):
        d2v.after_step(encoders, progress)
        assert d2v.momentum == pytest.approx(get_annealed_rate(0.999, 0.9999, progress * 100, 100))
    assert [_default("data2vec", k) for k in ("momentum", "momentum_end", "instance_norm", "loss_beta",
                                              "mask_ratio", "mask_prob")] == [0.999, 0.9999, True, 0.0, 0.6, 0.15]


def test_triplet_matches_tensorflow_addons_semihard_with_facenets_margin():
    """tfa.losses.triplet_semihard_loss (distance_metric "L2": non-squared Euclidean): per positive pair the
    closest negative farther than the positive, else the farthest negative; mean over positive pairs.
    FaceNet's α = 0.2 is printed for *squared* distances (TFA's own default margin is 1.0); mmssl keeps the
    non-squared distance with α = 0.2 — on unit vectors d ∈ [0, 2], so 0.2 is a tenth of the range either way
    as in FaceNet (α/4 of d² ∈ [0, 4] there). Recorded here so a port of either default knows which it gets."""
    from mmssl.objectives.contrastive import semi_hard_triplet_loss

    x = F.normalize(torch.randn(8, 4, generator=G), dim=1)
    ids = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    d = torch.cdist(x, x)
    losses = []
    for a in range(8):
        for p in range(8):
            if p == a or ids[p] != ids[a]:
                continue
            negatives = [float(d[a, n]) for n in range(8) if ids[n] != ids[a]]
            farther = [v for v in negatives if v > float(d[a, p])]
            d_an = min(farther) if farther else max(negatives)
            losses.append(max(0.0, float(d[a, p]) - d_an + 0.2))
    loss, _ = semi_hard_triplet_loss(x, ids, x, ids, torch.arange(8), 0.2)
    assert loss.item() == pytest.approx(sum(losses) / len(losses), rel=1e-4, abs=1e-6)
    assert _default("triplet", "margin") == 0.2
