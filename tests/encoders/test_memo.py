"""RowMemo: one call per distinct row, remembered outputs for frozen functions, gradients, bounds."""

import torch

from mmssl.encoders.memo import RowMemo, distinct_rows
from mmssl.registry import ENCODERS


class Counting:
    def __init__(self, fn):
        self.fn, self.rows = fn, 0

    def __call__(self, x):
        self.rows += len(x)
        return self.fn(x)


def test_distinct_rows_and_inverse():
    x = torch.tensor([[1, 2], [3, 4], [1, 2], [5, 6], [3, 4]])
    keys, first, inverse = distinct_rows(x)
    assert len(keys) == 3 and first.tolist() == [0, 1, 3] and inverse.tolist() == [0, 1, 0, 2, 1]
    assert torch.equal(x[first][inverse], x)


def test_each_distinct_row_is_computed_once_and_results_match():
    lin = torch.nn.Linear(4, 3)
    x = torch.randn(5, 4)[torch.tensor([0, 1, 0, 2, 1, 1, 3, 4])]
    fn = Counting(lin)
    out = RowMemo()(fn, x)
    assert fn.rows == 5 and torch.allclose(out, lin(x), atol=1e-6)


def test_gradients_flow_through_distinct_rows():
    lin = torch.nn.Linear(4, 3)
    x = torch.randn(3, 4)[torch.tensor([0, 0, 1, 2])]
    RowMemo()(lin, x).sum().backward()
    expected = torch.autograd.grad(lin(x).sum(), lin.weight)[0]
    assert torch.allclose(lin.weight.grad, expected, atol=1e-6)


def test_remembered_outputs_skip_known_rows_and_stay_bounded():
    lin = torch.nn.Linear(4, 3).requires_grad_(False)
    fn, memo = Counting(lin), RowMemo(max_entries=6)
    a, b = torch.randn(4, 4), torch.randn(2, 4)
    memo(fn, a, remember=True)
    assert fn.rows == 4 and len(memo) == 4
    out = memo(fn, torch.cat([b, a]), remember=True)  # only b is new
    assert fn.rows == 6 and len(memo) == 6
    assert torch.allclose(out, lin(torch.cat([b, a])), atol=1e-6)
    memo(fn, torch.randn(1, 4), remember=True)  # over the bound: start over with this batch
    assert len(memo) == 1


def test_goal_map_encodes_only_occupied_tiles_and_matches_a_plain_forward():
    torch.manual_seed(0)
    enc = ENCODERS.build("goal_map", tile_encoder={"name": "convnet", "in_channels": 1, "width": 4},
                         instruction_encoder={"name": "text_transformer", "dim": 16, "depth": 1, "heads": 2,
                                              "context_length": 8}, dim=16).eval()
    image = torch.zeros(3, 2, 24, 24, dtype=torch.uint8)
    image[:, 0, :8, :8] = torch.randint(1, 255, (8, 8), dtype=torch.uint8)  # the same picture in every sample
    image[1, 0, 8:16, 16:24] = 200
    image[:, 1, 16:24, :8] = 255
    obs = {"image": image, "instruction": torch.randint(1, 100, (3, 8))}
    seen = Counting(enc.tile_encoder.forward)
    enc.tile_encoder.forward = seen
    out = enc(obs)
    assert seen.rows == 2  # two distinct non-empty pictures among 27 cells
    tiles = (image[:, :1].float() / 255).unfold(2, 8, 8).unfold(3, 8, 8).permute(0, 2, 3, 1, 4, 5).reshape(-1, 1, 8, 8)
    direct = torch.nn.functional.normalize(enc.tile_proj(seen.fn(tiles).pooled), dim=-1).reshape(3, 9, -1)
    occupied = tiles.flatten(1).amax(-1).reshape(3, 9, 1) > 0
    assert torch.allclose(out.tokens, direct * occupied, atol=1e-5)


def test_trainable_goal_map_remembers_only_while_its_weights_stay_fixed():
    torch.manual_seed(0)
    enc = ENCODERS.build("goal_map", tile_encoder={"name": "convnet", "in_channels": 1, "width": 4}, dim=16)
    image = torch.zeros(2, 2, 16, 16, dtype=torch.uint8)
    image[:, 0, :8, :8] = torch.randint(1, 255, (8, 8), dtype=torch.uint8)
    image[:, 1, 8:, 8:] = 255
    seen = Counting(enc.tile_encoder.forward)
    enc.tile_encoder.forward = seen
    enc.eval()
    with torch.no_grad():
        first = enc({"image": image}).tokens
        enc({"image": image})
        assert seen.rows == 1  # inference with fixed weights: the picture is encoded once
        enc.tile_proj[0].weight.add_(1.0)  # an optimiser step would do this
        changed = enc({"image": image}).tokens
    assert seen.rows == 2 and not torch.allclose(first, changed)
    enc.train()
    enc({"image": image})
    enc({"image": image})
    assert seen.rows == 4  # training: every forward computes (gradients must flow)
