"""LARS: layer-wise adaptive rate scaling (You, Gitman & Ginsburg 2017), as the SSL reference codes use it.

torch has no LARS; this follows facebookresearch/barlowtwins ``main.py`` (also the VICReg code), which
matches google-research/simclr ``lars_optimizer.py`` and BYOL's optax ``lars`` with classic momentum:

    g ← ∇w + λ·w                              (weight decay, when the group has it)
    g ← g · η‖w‖/‖g‖  if ‖w‖ > 0 and ‖g‖ > 0   (trust ratio, when the group is adapted)
    μ ← m·μ + g ;  w ← w - lr·μ

η is the trust coefficient (0.001 in all three codes). Biases and normalisation parameters (ndim ≤ 1)
get neither weight decay nor adaptation there; ``make_optimizer`` puts them in a group with
``weight_decay=0, lars_adaptation=False``.
"""

from __future__ import annotations

import torch


class LARS(torch.optim.Optimizer):
    """SGD with momentum whose per-tensor step is scaled by the trust ratio ``η‖w‖/‖g‖`` (see the module docstring).

    Group options: ``lr``, ``momentum``, ``weight_decay``, ``trust_coefficient`` (η) and
    ``lars_adaptation`` (False: plain momentum SGD for that group). The momentum buffer ``mu`` is the
    optimiser state, so ``state_dict`` round-trips exactly.
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 trust_coefficient: float = 0.001, lars_adaptation: bool = True):
        if lr < 0 or momentum < 0 or weight_decay < 0 or trust_coefficient <= 0:
            raise ValueError(f"LARS needs lr, momentum, weight_decay ≥ 0 and trust_coefficient > 0; got "
                             f"lr={lr}, momentum={momentum}, weight_decay={weight_decay}, "
                             f"trust_coefficient={trust_coefficient}")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                                      trust_coefficient=trust_coefficient, lars_adaptation=lars_adaptation))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if group["weight_decay"]:
                    g = g.add(p, alpha=group["weight_decay"])
                if group["lars_adaptation"]:
                    w_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(g)
                    one = torch.ones_like(w_norm)
                    ratio = torch.where((w_norm > 0) & (g_norm > 0), group["trust_coefficient"] * w_norm / g_norm, one)
                    g = g.mul(ratio)
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                mu = state["mu"]
                mu.mul_(group["momentum"]).add_(g)
                p.add_(mu, alpha=-group["lr"])
        return loss
