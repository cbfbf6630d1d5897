"""MAE / Audio-MAE: exact masking, the encoder on visible tokens only, the loss on masked patches only,
normalised-pixel targets, a naive re-derivation of the loss, gradients."""

import pytest
import torch
from torch import nn

from mmssl.encoders.vit import sincos_2d
from mmssl.errors import ConfigError
from mmssl.objectives.mae import mae_random_masking, normalise_patches
from mmssl.registry import ENCODERS, OBJECTIVES
from mmssl.types import Batch
from tests.objectives.patch_helpers import audio_encoders, param_gradcheck, record_transform, vit_encoders


def test_random_masking_is_exact_and_consistent():
    keep, mask, restore = mae_random_masking(50, 16, 0.75)
    assert keep.shape == (50, 4) and (mask.sum(1) == 12).all()  # exactly 75 % masked
    for b in range(50):
        assert set(keep[b].tolist()) == set((mask[b] == 0).nonzero().squeeze(1).tolist())
    shuffle = torch.cat([keep, torch.zeros(50, 12, dtype=torch.long)], 1)
    assert torch.equal(torch.gather(torch.arange(16).expand(50, -1).argsort(1), 1, restore), restore)  # a permutation
    assert torch.equal(torch.gather(shuffle, 1, restore)[mask == 0].sort().values, keep.sort(1).values.flatten().sort().values)
    assert mae_random_masking(3, 10, 0.75)[0].shape == (3, 2)  # int(10·0.25) = 2 as the official code
    assert mae_random_masking(3, 4, 0.99)[0].shape == (3, 1)  # never zero visible patches


def test_normalise_patches_by_hand():
    t = normalise_patches(torch.tensor([[[0.0, 1.0, 2.0, 3.0]]]))
    var = (1.5 ** 2 + 0.5 ** 2) * 2 / 3  # unbiased, as the official code
    assert torch.allclose(t, (torch.tensor([0.0, 1, 2, 3]) - 1.5) / (var + 1e-6) ** 0.5)


def test_loss_matches_a_naive_rederivation():
    encoders = vit_encoders()
    mae = OBJECTIVES.build("mae", encoders, decoder_width=16, decoder_depth=1, decoder_heads=2)
    x = torch.rand(3, 1, 8, 8)
    torch.manual_seed(5)
    loss = mae(Batch({"image": x}), encoders).loss
    torch.manual_seed(5)
    noise = torch.rand(3, 16)  # the same draw as the objective's masking
    vit = encoders["image"]
    e = vit.embed(x)
    total, count = 0.0, 0
    for b in range(3):
        order = sorted(range(16), key=lambda i: noise[b, i].item())
        visible = order[:4]
        latent = vit.transform((e.tokens[b] + e.pos[0])[visible][None])[0]
        seq = torch.zeros(16, 16)
        y = mae.decoder_embed(latent)
        for j, i in enumerate(visible):
            seq[i] = y[j]
        for i in order[4:]:
            seq[i] = mae.mask_token[0, 0]
        seq = seq + sincos_2d(4, 4, 16)
        for block in mae.decoder_blocks:
            seq = block(seq[None])[0]
        pred = mae.decoder_pred(mae.decoder_norm(seq))
        for i in order[4:]:  # masked patches only
            p = e.patches[b, i]
            target = (p - p.mean()) / (p.var() + 1e-6).sqrt()
            total = total + ((pred[i] - target) ** 2).mean()
            count += 1
    assert count == 3 * 12
    assert torch.allclose(loss, total / count, atol=1e-5)


def test_encoder_sees_only_the_visible_tokens():
    encoders = vit_encoders()
    seen = record_transform(encoders["image"])
    mae = OBJECTIVES.build("mae", encoders, decoder_width=16, decoder_depth=1, decoder_heads=2)
    x = torch.rand(4, 1, 8, 8)
    torch.manual_seed(1)
    mae(Batch({"image": x}), encoders)
    assert len(seen) == 1 and seen[0].shape == (4, 4, 16)  # 4 of 16 tokens
    torch.manual_seed(1)
    keep, _, _ = mae_random_masking(4, 16, 0.75)
    e = encoders["image"].embed(x)
    expected = torch.stack([(e.tokens + e.pos)[b, keep[b]] for b in range(4)])
    assert torch.allclose(seen[0], expected)


def test_loss_reads_only_the_masked_patches():
    encoders = vit_encoders()
    mae = OBJECTIVES.build("mae", encoders, decoder_width=16, decoder_depth=1, decoder_heads=2)
    x = torch.rand(4, 1, 8, 8)
    torch.manual_seed(2)
    _, mask, _ = mae_random_masking(4, 16, 0.75)
    where = {"visible": mask == 0, "masked": mask == 1}

    def run(perturb=None):
        handle = None
        if perturb is not None:
            handle = mae.decoder_pred.register_forward_hook(lambda m, i, out: out + 100.0 * where[perturb][..., None])
        torch.manual_seed(2)
        loss = mae(Batch({"image": x}), encoders).loss
        if handle:
            handle.remove()
        return loss

    base = run()
    assert torch.allclose(run("visible"), base)  # huge errors on visible patches do not count
    assert run("masked") > base + 1000


def test_normalised_pixel_targets():
    encoders = vit_encoders()
    x = torch.rand(2, 1, 8, 8)
    e = encoders["image"].embed(x)
    for normalize, target in ((True, normalise_patches(e.patches)), (False, e.patches)):
        mae = OBJECTIVES.build("mae", encoders, decoder_width=16, decoder_depth=1, decoder_heads=2,
                               normalize_target=normalize)
        mae.decoder_pred.register_forward_hook(lambda m, i, out, t=target: t.detach())  # a perfect decoder
        assert mae(Batch({"image": x}), encoders).loss.item() < 1e-10
        mae_other = OBJECTIVES.build("mae", encoders, normalize_target=not normalize, decoder_width=16,
                                     decoder_depth=1, decoder_heads=2)
        mae_other.decoder_pred.register_forward_hook(lambda m, i, out, t=target: t.detach())
        assert mae_other(Batch({"image": x}), encoders).loss.item() > 1e-3  # the other target is different


def test_gradients():
    encoders = vit_encoders(width=8, depth=1)
    mae = OBJECTIVES.build("mae", encoders, decoder_width=8, decoder_depth=1, decoder_heads=2)
    x = torch.rand(2, 1, 8, 8)
    assert param_gradcheck(encoders, mae, x, ["encoders.image.patch_embed.weight", "objective.mask_token",
                                              "encoders.image.blocks.0.mlp.c_fc.bias"])
    torch.manual_seed(3)
    mae(Batch({"image": x}), encoders).loss.backward()
    for name, p in [*encoders.named_parameters(), *mae.named_parameters()]:
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_audio_mae_on_spectrogram_patches():
    encoders = audio_encoders()
    seen = record_transform(encoders["audio"])
    mae = OBJECTIVES.build("mae", encoders, mask_ratio=0.8, decoder_width=16, decoder_depth=1, decoder_heads=2)
    assert mae.modality == "audio" and mae.decoder_pred.out_features == 32  # 8 mels × 4 frames
    wave = 0.1 * torch.randn(3, 1000)
    out = mae(Batch({"audio": wave}), encoders)
    n = encoders["audio"].embed(wave).tokens.shape[1]
    assert seen[0].shape[1] == int(n * 0.2) and out.metrics["mask_ratio"] == pytest.approx(1 - int(n * 0.2) / n)
    out.loss.backward()
    assert encoders["audio"].patch.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["mae", "ijepa"])
def test_runs_on_an_open_clip_vit_tower(name):
    enc = ENCODERS.build("open_clip_vision", in_channels=1, embed_dim=24,
                         config={"image_size": 8, "patch_size": 2, "width": 16, "layers": 1, "head_width": 8})
    encoders = nn.ModuleDict({"image": enc})
    kw = dict(decoder_width=16, decoder_depth=1, decoder_heads=2) if name == "mae" else dict(
        predictor_width=8, predictor_depth=1, predictor_heads=2, target_scale=[0.1, 0.2], min_keep=2)
    objective = OBJECTIVES.build(name, encoders, **kw)
    seen = record_transform(enc)
    out = objective(Batch({"image": torch.rand(3, 1, 8, 8)}), encoders)
    out.loss.backward()
    assert torch.isfinite(out.loss) and seen[0].shape[1] < 16 and enc.visual.conv1.weight.grad.abs().sum() > 0


def test_errors():
    convnet = nn.ModuleDict({"image": ENCODERS.build("convnet", width=4)})
    with pytest.raises(ConfigError, match="vit_tiny"):
        OBJECTIVES.build("mae", convnet)
    with pytest.raises(ConfigError, match="mask_ratio"):
        OBJECTIVES.build("mae", vit_encoders(), mask_ratio=1.0)
    with pytest.raises(ConfigError, match="heads"):
        OBJECTIVES.build("mae", vit_encoders(), decoder_width=18, decoder_heads=4)
