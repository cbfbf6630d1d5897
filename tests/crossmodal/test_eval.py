"""Retrieval and zero-shot metrics on hand-made cases, and the full cross-modal report on hand-built encoders."""

import pytest
import torch

from mmssl.data.base import ArrayDataset
from mmssl.data.images import DIGIT_NAMES
from mmssl.data.tokenize import tokenize
from mmssl.encoders.base import Encoder
from mmssl.eval.crossmodal import crossmodal_report, exact_recall_at_k, recall_at_k, zeroshot_accuracy
from mmssl.types import EncoderOutput


def test_recall_at_k_hand_case():
    sim = torch.tensor([[0.9, 0.1, 0.5],   # query class 0: best key is class 0 → hit@1
                        [0.9, 0.1, 0.5],   # query class 1: top-1 class 0, top-2 adds class 2, class 1 is last
                        [0.1, 0.2, 0.3]])  # query class 2: top-1 is key 2 (class 2)
    labels = torch.tensor([0, 1, 2])
    assert recall_at_k(sim, labels, labels, ks=(1, 2, 3)) == pytest.approx({1: 2 / 3, 2: 2 / 3, 3: 1.0})
    # class-level: a twin of the right class counts even when it is not the paired item
    assert recall_at_k(sim, torch.tensor([0, 0, 2]), torch.tensor([0, 0, 2]), ks=(1,)) == {1: 1.0}
    assert exact_recall_at_k(sim, ks=(1, 3)) == pytest.approx({1: 2 / 3, 3: 1.0})


def test_zeroshot_accuracy_hand_case():
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    class_text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert zeroshot_accuracy(z, torch.tensor([0, 1, 0]), class_text) == pytest.approx(2 / 3)


class OneHot(Encoder):
    """Maps a (N, 10) one-hot input (any trailing shape) to itself: a perfect class encoder."""

    def __init__(self, modality):
        super().__init__()
        self.modality, self.dim, self.dummy = modality, 10, torch.nn.Parameter(torch.zeros(()))

    def encode(self, x):
        return EncoderOutput(pooled=x.flatten(1).float() + self.dummy)


class DigitWords(Encoder):
    """Text → one-hot of the digit its ids name (word or numeral): a perfect text encoder for digit prompts."""

    modality, dim = "text", 10

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(()))
        ids = tokenize(DIGIT_NAMES + [str(d) for d in range(10)], 8)[:, 1]
        self.register_buffer("word_ids", ids.view(2, 10))

    def encode(self, x):
        return EncoderOutput(pooled=(x[:, :, None, None] == self.word_ids).any(1).any(1).float() + self.dummy)


def test_report_on_perfect_and_scrambled_encoders(tmp_path):
    labels = torch.arange(30) % 10
    onehot = torch.eye(10)[labels]
    texts = tokenize([f"a handwritten {DIGIT_NAMES[y]}" for y in labels], 16)
    split = ArrayDataset({"image": onehot.view(30, 1, 1, 10), "audio": onehot.clone(), "text": texts}, labels,
                         list(DIGIT_NAMES), "toy")
    encoders = {"image": OneHot("image"), "audio": OneHot("audio"), "text": DigitWords()}
    r = crossmodal_report(encoders, split, batch_size=7, run_dir=tmp_path)
    for a in ("image", "audio", "text"):
        for b in {"image", "audio", "text"} - {a}:
            assert r[f"retrieval/{a}_to_{b}/R@1"] == 1.0 and f"retrieval/{a}_to_{b}/R@10" in r
    assert r["zeroshot/image_accuracy"] == 1.0 and r["zeroshot/audio_accuracy"] == 1.0
    assert not any(k.startswith("retrieval_exact/") for k in r)  # duplicated rows: pairs are not 1:1
    assert (tmp_path / "plots" / "crossmodal_similarity.png").stat().st_size > 1000
    assert (tmp_path / "plots" / "crossmodal_embedding.png").stat().st_size > 1000
    scrambled = ArrayDataset({"image": onehot[torch.randperm(30)].view(30, 1, 1, 10), "audio": onehot}, labels,
                             list(DIGIT_NAMES), "toy")
    r = crossmodal_report({"image": OneHot("image"), "audio": OneHot("audio")}, scrambled)
    assert r["retrieval/image_to_audio/R@1"] < 0.5


def test_report_exact_retrieval_and_projections():
    x = torch.randn(12, 5)
    split = ArrayDataset({"image": x, "audio": x.clone()}, torch.arange(12) % 3, None, "pairs")
    proj = {"image": torch.nn.Linear(5, 5), "audio": torch.nn.Linear(5, 5)}
    proj["audio"].load_state_dict(proj["image"].state_dict())
    lin = lambda m: type("Lin", (OneHot,), {"encode": lambda self, v: EncoderOutput(pooled=v + self.dummy)})(m)  # noqa: E731
    r = crossmodal_report({"image": lin("image"), "audio": lin("audio")}, split, projections=proj)
    assert r["retrieval_exact/image_to_audio/R@1"] == 1.0 and r["retrieval/audio_to_image/R@1"] == 1.0
    text = tokenize(["one"] * 12, 8)
    with_text = ArrayDataset({"image": x, "audio": x.clone(), "text": text}, torch.arange(12) % 3, None, "pairs")
    r2 = crossmodal_report({"image": lin("image"), "audio": lin("audio"), "text": DigitWords()}, with_text,
                           projections=proj)
    assert r2 == r  # the text encoder has no projection: it is not in the joint space and not evaluated
