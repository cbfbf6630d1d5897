"""LARS against a naive one-step computation of the Barlow Twins / SimCLR reference update, and its trainer wiring."""

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from mmssl.train.optim import LARS
from mmssl.train.trainer import make_optimizer


def _naive_lars_update(w, g, mu, lr, momentum, weight_decay, eta, adapt):
    """One step of facebookresearch/barlowtwins' LARS written out with Python floats on flattened lists."""
    w, g, mu = w.flatten().tolist(), g.flatten().tolist(), mu.flatten().tolist()
    d = [gi + weight_decay * wi for gi, wi in zip(g, w)]
    if adapt:
        w_norm = sum(x * x for x in w) ** 0.5
        d_norm = sum(x * x for x in d) ** 0.5
        q = eta * w_norm / d_norm if w_norm > 0 and d_norm > 0 else 1.0
        d = [q * x for x in d]
    mu = [momentum * m + x for m, x in zip(mu, d)]
    return [wi - lr * m for wi, m in zip(w, mu)], mu


def test_two_steps_match_naive_reference_with_and_without_adaptation():
    torch.manual_seed(0)
    weight, bias = nn.Parameter(torch.randn(3, 4)), nn.Parameter(torch.randn(3))
    opt = LARS([{"params": [weight], "weight_decay": 0.1},
                {"params": [bias], "weight_decay": 0.0, "lars_adaptation": False}],
               lr=0.5, momentum=0.9, trust_coefficient=0.02)
    ref = {"w": (weight.detach().clone(), torch.zeros(3, 4)), "b": (bias.detach().clone(), torch.zeros(3))}
    for _ in range(2):
        gw, gb = torch.randn(3, 4), torch.randn(3)
        weight.grad, bias.grad = gw.clone(), gb.clone()
        opt.step()
        w_new, w_mu = _naive_lars_update(ref["w"][0], gw, ref["w"][1], 0.5, 0.9, 0.1, 0.02, True)
        b_new, b_mu = _naive_lars_update(ref["b"][0], gb, ref["b"][1], 0.5, 0.9, 0.0, 0.02, False)
        ref = {"w": (torch.tensor(w_new).view(3, 4), torch.tensor(w_mu).view(3, 4)),
               "b": (torch.tensor(b_new), torch.tensor(b_mu))}
        assert torch.allclose(weight, ref["w"][0], atol=1e-6)
        assert torch.allclose(bias, ref["b"][0], atol=1e-6)
    # the adapted step is η‖w‖-sized, far below the plain lr·g one: adaptation really happened
    assert ref["w"][1].norm() < 0.1 * ref["b"][1].norm()


def test_zero_weights_fall_back_to_plain_sgd_and_bad_values_fail():
    w = nn.Parameter(torch.zeros(2, 2))
    opt = LARS([w], lr=0.1, momentum=0.0)
    w.grad = torch.ones(2, 2)
    opt.step()  # ‖w‖ = 0: trust ratio 1
    assert torch.allclose(w, torch.full((2, 2), -0.1))
    with pytest.raises(ValueError, match="trust_coefficient"):
        LARS([w], lr=0.1, trust_coefficient=0.0)


def test_trainer_builds_lars_excluding_biases_and_norms():
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    tcfg = OmegaConf.create({"optimizer": "lars", "lr": 0.3, "weight_decay": 1e-6, "momentum": 0.9,
                             "trust_coefficient": 0.001})
    opt = make_optimizer(model, tcfg)
    assert isinstance(opt, LARS)
    decayed, excluded = opt.param_groups
    assert all(p.ndim > 1 for p in decayed["params"]) and decayed["lars_adaptation"] and decayed["weight_decay"] == 1e-6
    assert all(p.ndim == 1 for p in excluded["params"]) and len(excluded["params"]) == 4
    assert not excluded["lars_adaptation"] and excluded["weight_decay"] == 0.0
    assert decayed["trust_coefficient"] == 0.001
    model(torch.randn(5, 4)).sum().backward()
    opt.step()
    state = opt.state_dict()
    clone = make_optimizer(model, tcfg)
    clone.load_state_dict(state)
    assert torch.equal(clone.state_dict()["state"][0]["mu"], state["state"][0]["mu"])


def test_pretrain_runs_with_trainer_optimizer_lars(tmp_path):
    """``trainer.optimizer=lars`` (advertised in configs/trainer/default.yaml) trains end to end and
    checkpoints LARS's state: the momentum buffers and the two groups (biases and norms unadapted)."""
    from mmssl import checkpoint
    from mmssl.cli import main
    from tests.conftest import tiny_overrides

    run = tmp_path / "run"
    assert main(["pretrain", *tiny_overrides(run, "trainer.optimizer=lars", "trainer.lr=0.3")]) == 0
    _, state = checkpoint.latest(run / "checkpoints")
    assert state["step"] == 6 and state["config"]["trainer"]["optimizer"] == "lars"
    groups = state["optimizer"]["param_groups"]
    assert [g["lars_adaptation"] for g in groups] == [True, False] and groups[0]["trust_coefficient"] == 0.001
    buffers = [s["mu"] for s in state["optimizer"]["state"].values()]
    assert buffers and all(torch.isfinite(b).all() for b in buffers) and any(b.abs().sum() > 0 for b in buffers)


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_adamw_and_sgd_take_the_fused_kernel_with_the_for_loop_update(name: str):
    """Plain CPU parameters get torch's fused AdamW/SGD: the same update as the per-tensor loop (two steps)."""
    torch.manual_seed(0)  # no BatchNorm: the bias before it has a zero gradient up to rounding, which Adam amplifies
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    reference = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    reference.load_state_dict(model.state_dict())
    tcfg = OmegaConf.create({"optimizer": name, "lr": 0.1, "weight_decay": 1e-2, "momentum": 0.9})
    opt = make_optimizer(model, tcfg)
    assert all(group["fused"] for group in opt.param_groups)
    groups = [{"params": [p for p in reference.parameters() if p.ndim > 1], "weight_decay": 1e-2},
              {"params": [p for p in reference.parameters() if p.ndim <= 1], "weight_decay": 0.0}]
    loop = (torch.optim.AdamW(groups, lr=0.1, foreach=False) if name == "adamw"
            else torch.optim.SGD(groups, lr=0.1, momentum=0.9, nesterov=True, foreach=False))
    x = torch.randn(6, 4)
    for _ in range(2):
        for net, optimizer in ((model, opt), (reference, loop)):
            optimizer.zero_grad()
            net(x).square().sum().backward()
            optimizer.step()
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
