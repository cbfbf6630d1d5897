"""Masked image/text/audio modelling, rotation and colourisation: values, masks, gradients, edge cases, errors."""

import math

import pytest
import torch
from torch import nn

from mmssl.encoders.base import Encoder
from mmssl.errors import ConfigError, ShapeError
from mmssl.objectives.predictive import block_mask, patchify, random_token_mask, token_grid
from mmssl.registry import OBJECTIVES
from mmssl.types import Batch, EncoderOutput
from tests.objectives.conftest import TEXT_VOCAB, make_batch, make_encoders

TEXT_KW = {"vocab_size": TEXT_VOCAB, "special_ids": [TEXT_VOCAB - 2, TEXT_VOCAB - 1]}


class Recorder(nn.Module):
    """Wraps an encoder and keeps the last input it saw (to check what an objective feeds it)."""

    def __init__(self, encoder):
        super().__init__()
        self.inner, self.dim, self.modality = encoder, encoder.dim, encoder.modality
        self.seen = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.inner(x)

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.inner, name)


class PooledOnlyImage(Encoder):
    modality, dim = "image", 8

    def __init__(self):
        super().__init__()
        self.in_channels = 1
        self.net = nn.Linear(64, 8)

    def encode(self, x):
        return EncoderOutput(pooled=self.net(x.flatten(1)))


def _zero(linear: nn.Linear, bias: float = 0.0):
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.fill_(bias)


def _encoder_grad(encoders) -> float:
    return float(sum(p.grad.abs().sum() for p in encoders.parameters() if p.grad is not None))


# -- helpers ------------------------------------------------------------------------------------------------
def test_token_grid_patchify_and_masks():
    assert token_grid(4, 8, 8) == (2, 2) and token_grid(8, 8, 16) == (2, 4)
    with pytest.raises(ShapeError):
        token_grid(5, 8, 8)
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float).view(2, 1, 4, 4)
    patches = patchify(x, (2, 2), 2)  # (B, 4, 4): row-major 2×2 patches
    assert patches.shape == (2, 4, 4)
    assert patches[0, 1].tolist() == [2.0, 3.0, 6.0, 7.0]  # top-right patch
    mask = random_token_mask(50, 10, 0.6, "cpu")
    assert (mask.sum(1) == 6).all()
    assert (random_token_mask(3, 4, 0.01, "cpu").sum(1) == 1).all()  # never zero masked tokens
    blocks = block_mask(200, 30, 1, 5, "cpu")
    widths = blocks.sum(1)
    assert widths.min() >= 1 and widths.max() <= 5
    runs = blocks.int().diff(dim=1).abs().sum(1)  # one block: at most one rise and one fall
    assert runs.max() <= 2


# -- masked_image -------------------------------------------------------------------------------------------
def test_masked_image_matches_independent_rederivation():
    encoders = make_encoders("image")
    obj = OBJECTIVES.build("masked_image", encoders, mask_ratio=0.5, target_patch_size=4)
    x = torch.rand(3, 1, 8, 8)
    torch.manual_seed(1)
    loss = obj(Batch({"image": x}), encoders).loss
    torch.manual_seed(1)
    mask = torch.rand(3, 4).argsort(1).argsort(1) < 2  # the objective's draw: 2 of 4 grid cells per image
    masked = x.clone()
    for b in range(3):
        for cell in range(4):
            if mask[b, cell]:
                r, c = divmod(cell, 2)
                masked[b, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4] = obj.mask_fill.view(-1, 1, 1)
    tokens = encoders["image"](masked).tokens  # (3, 4, D)
    errors = []
    for b in range(3):
        for cell in range(4):
            if mask[b, cell]:
                r, c = divmod(cell, 2)
                target = x[b, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4].flatten()
                errors.append((obj.decoder(tokens[b, cell]) - target).pow(2).mean())
    assert loss.item() == pytest.approx(torch.stack(errors).mean().item(), rel=1e-5)


def test_masked_image_hides_masked_pixels_and_trains_fill_and_encoder():
    encoders = make_encoders("image")
    obj = OBJECTIVES.build("masked_image", encoders, mask_ratio=0.75)
    rec = nn.ModuleDict({"image": Recorder(encoders["image"])})
    x = torch.rand(4, 1, 8, 8)
    out = obj(Batch({"image": x}), rec)
    seen = rec["image"].seen[-1]
    changed = (seen != x).flatten(1).float().mean(1)
    assert torch.allclose(changed, torch.full((4,), 0.75))  # 3 of 4 cells, whole cells replaced
    assert torch.allclose(seen[seen != x], obj.mask_fill.detach().expand_as(seen)[seen != x])
    out.loss.backward()
    assert obj.mask_fill.grad.abs().sum() > 0 and _encoder_grad(encoders) > 0
    assert 0.74 < out.metrics["mask_ratio"] < 0.76 and isinstance(out.metrics["mask_ratio"], float)


def test_masked_image_needs_tokens():
    encoders = nn.ModuleDict({"image": PooledOnlyImage()})
    obj = OBJECTIVES.build("masked_image", encoders)
    with pytest.raises(ConfigError, match="tokens"):
        obj(Batch({"image": torch.rand(2, 1, 8, 8)}), encoders)


# -- masked_text --------------------------------------------------------------------------------------------
def test_masked_text_chooses_only_ordinary_tokens_with_bert_proportions():
    encoders = make_encoders("text")
    obj = OBJECTIVES.build("masked_text", encoders, mask_prob=0.25, **TEXT_KW)
    ids = torch.randint(1, TEXT_VOCAB - 2, (400, 12))
    ids[:, 0], ids[:, 9], ids[:, 10:] = TEXT_VOCAB - 2, TEXT_VOCAB - 1, 0  # sot … eot pad pad
    chosen = obj.masking.choose(ids)
    assert (chosen.sum(1) == 2).all()  # round(0.25 · 8 ordinary tokens)
    assert not chosen[:, [0, 9, 10, 11]].any()
    rec = nn.ModuleDict({"text": Recorder(encoders["text"])})
    obj(Batch({"text": ids}), rec)
    seen = rec["text"].seen[-1]
    changed = seen != ids
    assert not changed[:, [0, 9, 10, 11]].any()
    masked_share = ((seen == obj.masking.mask_id) & (ids != 0)).float().sum() / (len(ids) * 2)
    assert 0.75 < masked_share.item() < 0.85  # BERT: 80% of chosen positions become the mask id


def test_masked_text_uniform_head_gives_log_vocab():
    encoders = make_encoders("text")
    obj = OBJECTIVES.build("masked_text", encoders, **TEXT_KW)
    _zero(obj.head[-1])
    out = obj(make_batch("text", 4), encoders)
    assert out.loss.item() == pytest.approx(math.log(TEXT_VOCAB), rel=1e-6)


def test_masked_text_gradient_edge_cases_and_shape_error():
    encoders = make_encoders("text")
    obj = OBJECTIVES.build("masked_text", encoders, **TEXT_KW)
    ids = torch.randint(1, TEXT_VOCAB - 2, (1, 12)).repeat(2, 1)  # batch of two duplicates
    out = obj(Batch({"text": ids}), encoders)
    out.loss.backward()
    assert torch.isfinite(out.loss) and _encoder_grad(encoders) > 0
    only_special = torch.full((2, 12), TEXT_VOCAB - 1)
    assert obj(Batch({"text": only_special}), encoders).loss.item() == 0.0

    class Short(Encoder):
        modality, dim = "text", 16

        def __init__(self):
            super().__init__()
            self.e = nn.Embedding(TEXT_VOCAB, 16)

        def encode(self, x):
            t = self.e(x)[:, :-1]
            return EncoderOutput(t.mean(1), t)

    short = nn.ModuleDict({"text": Short()})
    with pytest.raises(ShapeError, match="one token per input id"):
        OBJECTIVES.build("masked_text", short, **TEXT_KW)(make_batch("text", 2), short)


# -- masked_audio -------------------------------------------------------------------------------------------
def test_masked_audio_loss_is_on_masked_cells_only():
    encoders = make_encoders("audio")
    obj = OBJECTIVES.build("masked_audio", encoders)
    wave = make_batch("audio", 2)["audio"]
    spec = encoders["audio"].frontend(wave)
    b, m, f = spec.shape
    fixed = torch.zeros(b, m, f, dtype=torch.bool)
    fixed[0, :, 4:8] = True  # a time block (whole columns)
    fixed[1, 3:5, :] = True  # a frequency block (whole rows)
    obj.mask = lambda *args: fixed
    _zero(obj.decoder)
    seen = []
    original = encoders["audio"].encode_spectrogram
    encoders["audio"].encode_spectrogram = lambda s: (seen.append(s.detach()), original(s))[1]
    loss = obj(Batch({"audio": wave}), encoders).loss
    target = (spec - spec.mean((1, 2), keepdim=True)) / (spec.std((1, 2), keepdim=True) + 1e-5)
    steps = f // 2  # the tiny encoder's stride-2 tokens each cover two frames
    num = den = 0.0
    for i in range(b):
        for t in range(steps):
            cells = slice(2 * t, 2 * t + 2)
            w = fixed[i, :, cells].float().mean(1)  # (M,) masked share of the token's span
            num += (w * target[i, :, cells].mean(1).pow(2)).sum()
            den += w.sum()
    assert loss.item() == pytest.approx((num / den).item(), rel=1e-5)
    filled = seen[-1]
    assert torch.allclose(filled[0, :, 4:8], spec[0].mean().expand(m, 4), atol=1e-5)
    assert torch.equal(filled[0, :, :4], spec[0, :, :4])


def test_masked_audio_gradients_and_protocol_error():
    encoders = make_encoders("audio")
    obj = OBJECTIVES.build("masked_audio", encoders, time_mask_width=4, freq_mask_width=4)
    wave = make_batch("audio", 1)["audio"].repeat(2, 1)
    out = obj(Batch({"audio": wave}), encoders)
    out.loss.backward()
    assert torch.isfinite(out.loss) and _encoder_grad(encoders) > 0
    assert 0 < out.metrics["masked_fraction"] < 1

    class PlainAudio(Encoder):
        modality, dim = "audio", 4

        def encode(self, x):
            return EncoderOutput(x[:, :4])

    with pytest.raises(ConfigError, match="encode_spectrogram"):
        OBJECTIVES.build("masked_audio", nn.ModuleDict({"audio": PlainAudio()}))


# -- rotation -----------------------------------------------------------------------------------------------
def test_rotation_shows_all_four_rotations_and_uniform_head_gives_log4():
    encoders = make_encoders("image")
    obj = OBJECTIVES.build("rotation", encoders, hidden_dim=8)
    _zero(obj.head[-1])
    rec = nn.ModuleDict({"image": Recorder(encoders["image"])})
    x = torch.rand(3, 1, 8, 8)
    out = obj(Batch({"image": x}), rec)
    assert out.loss.item() == pytest.approx(math.log(4), rel=1e-6)
    seen = rec["image"].seen[-1]
    assert seen.shape == (12, 1, 8, 8)
    assert torch.equal(seen[3:6], x.transpose(2, 3).flip(2))  # 90° counter-clockwise
    assert torch.equal(seen[6:9], x.flip(2, 3))  # 180°


def test_rotation_gradients_duplicates_and_non_square():
    encoders = make_encoders("image")
    obj = OBJECTIVES.build("rotation", encoders, hidden_dim=8)
    out = obj(Batch({"image": torch.rand(1, 1, 8, 8).repeat(2, 1, 1, 1)}), encoders)
    out.loss.backward()
    assert torch.isfinite(out.loss) and _encoder_grad(encoders) > 0
    with pytest.raises(ShapeError, match="square"):
        obj(Batch({"image": torch.rand(2, 1, 8, 6)}), encoders)


def _glyphs(n: int, generator: torch.Generator) -> torch.Tensor:
    """(n, 1, 8, 8) noisy "L" shapes of random size and position: upright has a meaning, as in digits."""
    images = 0.1 * torch.rand(n, 1, 8, 8, generator=generator)
    for i in range(n):
        top, left = torch.randint(0, 3, (2,), generator=generator).tolist()
        height, width = torch.randint(4, 6, (2,), generator=generator).tolist()
        images[i, 0, top:top + height, left] = 1.0  # the stem
        images[i, 0, top + height - 1, left:left + width - 1] = 1.0  # the foot
    return images


def test_rotation_learns_upright_shapes():
    """A few dozen steps beat chance (25%) clearly on held-out shapes: the pretext task is learnable."""
    g = torch.Generator().manual_seed(0)
    train, held_out = _glyphs(640, g), _glyphs(128, g)
    encoders = make_encoders("image")
    obj = OBJECTIVES.build("rotation", encoders, hidden_dim=16)
    opt = torch.optim.Adam([*encoders.parameters(), *obj.parameters()], lr=1e-2)
    for step in range(20):
        out = obj(Batch({"image": train[step * 32:(step + 1) * 32]}), encoders)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    encoders.eval(), obj.eval()
    with torch.no_grad():
        accuracy = obj(Batch({"image": held_out}), encoders).metrics["rotation_accuracy"]
    assert accuracy > 0.5, accuracy  # measured 1.0 with this seed; untrained ≈ 0.25


# -- colorization -------------------------------------------------------------------------------------------
def test_colorization_sees_grey_and_zero_decoder_loss_is_chroma_energy():
    encoders = make_encoders("image", channels=3)
    obj = OBJECTIVES.build("colorization", encoders)
    _zero(obj.decoder)
    rec = nn.ModuleDict({"image": Recorder(encoders["image"])})
    x = torch.rand(3, 3, 8, 8)
    out = obj(Batch({"image": x}), rec)
    gray = 0.2989 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]  # ITU-R 601 luma, as torchvision
    seen = rec["image"].seen[-1]
    assert torch.allclose(seen, gray[:, None].expand_as(x), atol=1e-4)
    chroma = (x - gray[:, None]).pow(2).mean()
    assert out.loss.item() == pytest.approx(chroma.item(), rel=1e-3)
    assert out.metrics["chroma_energy"] == pytest.approx(chroma.item(), rel=1e-3)


def test_colorization_gradients_and_channel_errors():
    encoders = make_encoders("image", channels=3)
    obj = OBJECTIVES.build("colorization", encoders)
    out = obj(Batch({"image": torch.rand(1, 3, 8, 8).repeat(2, 1, 1, 1)}), encoders)
    out.loss.backward()
    assert torch.isfinite(out.loss) and _encoder_grad(encoders) > 0
    with pytest.raises(ConfigError, match="3-channel"):
        OBJECTIVES.build("colorization", make_encoders("image", channels=1))


# -- modality errors ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,wrong", [("masked_image", "text"), ("masked_text", "image"), ("masked_audio", "obs"),
                                        ("rotation", "audio"), ("colorization", "obs")])
def test_wrong_modality_is_one_line_config_error(name, wrong):
    with pytest.raises(ConfigError) as info:
        OBJECTIVES.build(name, make_encoders(wrong), modality=wrong)
    message = str(info.value)
    assert "\n" not in message and wrong in message and OBJECTIVES.get(name).modalities[0] in message


def test_missing_modality_in_batch_names_what_is_there():
    encoders = make_encoders("image")
    obj = OBJECTIVES.build("rotation", encoders)
    with pytest.raises(ConfigError, match="obs"):
        obj(Batch({"obs": torch.randn(2, 6)}), encoders)


def test_masked_text_learns_a_predictable_language():
    """Ids count up (start, start+1, …): a masked id follows from its neighbours. Chance is 1/64."""
    g = torch.Generator().manual_seed(0)

    def counting(b):
        return (torch.randint(1, 62, (b, 1), generator=g) + torch.arange(12)) % 61 + 1

    encoders = make_encoders("text")
    obj = OBJECTIVES.build("masked_text", encoders, **TEXT_KW)
    opt = torch.optim.Adam([*encoders.parameters(), *obj.parameters()], lr=2e-2)
    for _ in range(25):
        out = obj(Batch({"text": counting(32)}), encoders)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    with torch.no_grad():
        accuracy = obj(Batch({"text": counting(256)}), encoders).metrics["masked_accuracy"]
    assert accuracy > 0.5, accuracy


# -- with the library's own audio and text encoders ----------------------------------------------------------
@pytest.mark.parametrize("encoder", [
    {"name": "audio_conv", "sample_rate": 8000, "n_mels": 16, "width": 4},
    {"name": "audio_transformer", "sample_rate": 8000, "n_mels": 16, "dim": 16, "depth": 1, "heads": 2}])
def test_masked_audio_with_library_audio_encoders(encoder):
    from mmssl.registry import ENCODERS

    encoders = nn.ModuleDict({"audio": ENCODERS.build(**encoder)})
    obj = OBJECTIVES.build("masked_audio", encoders, time_mask_width=4, freq_mask_width=4)
    assert obj.decoder.out_features == 16  # n_mels read from the encoder
    out = obj(Batch({"audio": 0.1 * torch.randn(2, 4000)}), encoders)
    out.loss.backward()
    assert torch.isfinite(out.loss) and _encoder_grad(encoders) > 0


def test_masked_text_with_the_library_text_transformer():
    from mmssl.registry import ENCODERS

    encoders = nn.ModuleDict({"text": ENCODERS.build("text_transformer", dim=16, depth=1, heads=2, vocab_size=TEXT_VOCAB,
                                                     context_length=12)})
    obj = OBJECTIVES.build("masked_text", encoders, **TEXT_KW)
    out = obj(make_batch("text", 3), encoders)
    out.loss.backward()
    assert torch.isfinite(out.loss) and _encoder_grad(encoders) > 0


def test_masked_text_random_replacements_are_ordinary_ids():
    encoders = make_encoders("text")
    obj = OBJECTIVES.build("masked_text", encoders, mask_id=5, mask_prob=0.5, **TEXT_KW)
    ids = torch.randint(6, TEXT_VOCAB - 2, (300, 12))
    ids[:, -2:] = 0  # padding
    rec = nn.ModuleDict({"text": Recorder(encoders["text"])})
    obj(Batch({"text": ids}), rec)
    seen = rec["text"].seen[-1]
    replaced = (seen != ids) & (seen != 5)  # the 10% random replacements
    assert replaced.sum() > 50
    assert not torch.isin(seen[replaced], torch.tensor([0, TEXT_VOCAB - 2, TEXT_VOCAB - 1])).any()


def test_band_tokens_are_averaged_per_time_step():
    from mmssl.objectives.predictive import time_steps
    from mmssl.registry import ENCODERS

    encoder = ENCODERS.build("audio_transformer", sample_rate=8000, n_mels=16, dim=8, depth=1, heads=2, patch_mels=4,
                             patch_frames=4)
    spec = encoder.frontend(0.1 * torch.randn(2, 4000))  # (2, 16, frames)
    tokens = encoder.encode_spectrogram(spec).tokens  # (2, steps·4 bands, 8) in (t f) order
    steps = -(-spec.shape[-1] // 4)
    per_step = time_steps(tokens, encoder)
    assert tokens.shape[1] == 4 * steps and per_step.shape == (2, steps, 8)
    assert torch.allclose(per_step[:, 1], tokens[:, 4:8].mean(1))
    encoders = nn.ModuleDict({"audio": encoder})
    obj = OBJECTIVES.build("masked_audio", encoders, time_mask_width=4, freq_mask_width=4)
    assert torch.isfinite(obj(Batch({"audio": 0.1 * torch.randn(2, 4000)}), encoders).loss)
