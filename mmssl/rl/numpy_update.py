"""PPO's update step 4 for CleanRL's MLP agents in numpy: the same losses, gradients, clipping and Adam.

For CleanRL's classic-control agent (separate 4→64→64 tanh actor and critic, linear heads) on
minibatches of 128, one autograd minibatch — forward, losses, backward, global-norm clipping, Adam —
took 2.3 ms on a 2-core Xeon, of which the matrix products are about 0.1 ms: the rest is per-op
dispatch, autograd bookkeeping and the optimiser's Python. ``MLPUpdate`` runs the same minibatch as
numpy array operations on one flat float32 vector of parameters (and one of each Adam moment) with
the gradients written out by hand:

- policy ``π = softmax(z)`` (Discrete) or ``N(μ, exp(log σ))`` with a state-independent ``log σ`` (Box);
- loss ``max(-A·ρ, -A·clip(ρ, 1±ε)) - c_H·H + c_V·½·max((V-R)², (V_old + clip(V-V_old, ±ε) - R)²)``,
  ρ = exp(log π - log π_old), A normalised per minibatch, means over the minibatch; where two
  branches of a ``max`` tie each gets half the gradient and a clip's bounds pass it, as in autograd;
- the global gradient norm clipped to ``max_grad_norm`` (``clip_grad_norm_``), then torch's Adam
  (``m ← lerp(m, g, 1-β₁)``, ``v ← β₂v + (1-β₂)g²``, ``θ ← θ - lr/(1-β₁ᵗ) · m / (√v/√(1-β₂ᵗ) + ε)``).

Parameters and Adam's state are read from the agent and ``torch.optim.Adam`` at the start of each
update and written back at its end (so checkpoints, resume and the rollout's wide network see plain
torch state, and a run may switch engines); nothing is written when a minibatch turns out non-finite.
tests/rl/test_numpy_update.py checks every gradient against autograd and whole updates against
``PPO.optimise`` through torch. ``agent.update_engine=torch`` keeps autograd for everything; agents
outside this shape (other encoders, auxiliary objectives, several ranks, GPUs, bf16) always use it.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import nn

from mmssl.errors import NonFiniteError

ENGINES = ("auto", "numpy", "torch")
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def unsupported(ppo, precision: str = "fp32") -> str | None:
    """Why ``ppo``'s update cannot run in numpy at ``precision`` (a name, or auto), or None when it can."""
    if ppo.device.type != "cpu":
        return f"the agent is on {ppo.device}"
    if ppo.world > 1:
        return "the run has several ranks (DistributedDataParallel)"
    if precision not in ("fp32", "auto"):
        return f"precision is {precision}"
    if len(ppo.aux):
        return "auxiliary objectives train with the agent"
    return _unsupported_agent(ppo.agent, ppo.optimizer)


def _unsupported_agent(agent, opt: torch.optim.Optimizer) -> str | None:
    if agent.critic_int is not None:
        return "an intrinsic value head (intrinsic_integration=value_head)"
    parts = agent._wide_parts()
    if not parts or not parts[0]:
        return "the agent is not separate MLP actor and critic trunks with linear heads (agent_encoder=mlp, " \
               "agent.separate_critic=true, agent.head_hidden=0)"
    if agent.freeze_encoder:
        return "the encoder is frozen"
    if type(opt) is not torch.optim.Adam or len(opt.param_groups) != 1:
        return "the optimiser is not one group of torch.optim.Adam"
    group = opt.param_groups[0]
    if group["weight_decay"] or group["amsgrad"] or group["maximize"] or group.get("capturable") \
            or group.get("differentiable") or group.get("decoupled_weight_decay"):
        return "Adam has options beyond lr, betas and eps"
    layers = [*_linears(agent.encoder), agent.actor, *_linears(agent.critic_encoder), agent.critic]
    expected = [p for m in layers for p in (m.weight, m.bias)] + ([] if agent.discrete else [agent.actor_logstd])
    if {id(p) for p in group["params"]} != {id(p) for p in expected} or len(group["params"]) != len(expected):
        return "the optimiser holds other parameters than the agent's"
    return None


def _linears(mlp: nn.Module) -> list[nn.Linear]:
    return [m for m in mlp.net if isinstance(m, nn.Linear)]


class MLPUpdate:
    """Step 4 of PPO for one agent and its ``torch.optim.Adam`` (``optimise``); see the module docstring.

    The flat vectors (parameters, gradient, both moments) are laid out in the optimiser's parameter order;
    each layer's weight and bias, and their gradients, are numpy views into them.
    """

    def __init__(self, agent, optimizer: torch.optim.Optimizer):
        self.agent, self.optimizer = agent, optimizer
        self.params: list[nn.Parameter] = list(optimizer.param_groups[0]["params"])
        self.names = {id(p): n for n, p in agent.named_parameters()}
        sizes = [p.numel() for p in self.params]
        offsets = np.cumsum([0, *sizes])
        self.slices = [slice(int(a), int(b)) for a, b in zip(offsets[:-1], offsets[1:])]
        total = int(offsets[-1])
        self.theta, self.grad = np.empty(total, np.float32), np.empty(total, np.float32)
        self.m, self.v = np.empty(total, np.float32), np.empty(total, np.float32)
        where = {id(p): s for p, s in zip(self.params, self.slices)}

        def view(flat: np.ndarray, p: torch.Tensor) -> np.ndarray:
            return flat[where[id(p)]].reshape(p.shape)

        def layers(mlps: list[nn.Linear], flat: np.ndarray):
            return [(view(flat, m.weight), view(flat, m.bias)) for m in mlps]

        actor = [*_linears(agent.encoder), agent.actor]
        critic = [*_linears(agent.critic_encoder), agent.critic]
        self.actor, self.critic = layers(actor, self.theta), layers(critic, self.theta)
        self.actor_grad, self.critic_grad = layers(actor, self.grad), layers(critic, self.grad)
        self.logstd = None if agent.discrete else (view(self.theta, agent.actor_logstd),
                                                   view(self.grad, agent.actor_logstd))
        self.tanh = agent.encoder.activation == "tanh"
        self.step = 0

    # -- torch state in and out -------------------------------------------------------------------
    def _load(self) -> None:
        state = self.optimizer.state
        steps = {float(state[p]["step"]) for p in self.params if "step" in state[p]}
        if len(steps) > 1 or (steps and any("step" not in state[p] for p in self.params)):
            raise RuntimeError(f"Adam's parameters are at different steps {sorted(steps)}; use agent.update_engine=torch")
        self.step = int(steps.pop()) if steps else 0
        for p, s in zip(self.params, self.slices):
            self.theta[s] = p.detach().reshape(-1).numpy()
            if self.step:
                self.m[s] = state[p]["exp_avg"].reshape(-1).numpy()
                self.v[s] = state[p]["exp_avg_sq"].reshape(-1).numpy()
        if not self.step:
            self.m.fill(0.0)
            self.v.fill(0.0)

    def _store(self) -> None:
        from torch.optim.optimizer import _get_scalar_dtype

        with torch.no_grad():
            for p, s in zip(self.params, self.slices):
                p.copy_(torch.from_numpy(self.theta[s]).view_as(p))  # bumps the version: the rollout cache rebuilds
                if not self.step:
                    continue
                state = self.optimizer.state[p]
                if "step" not in state:  # what torch's Adam creates on its first step
                    state["step"] = torch.tensor(0.0, dtype=_get_scalar_dtype())
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"].fill_(self.step)
                state["exp_avg"].copy_(torch.from_numpy(self.m[s]).view_as(p))
                state["exp_avg_sq"].copy_(torch.from_numpy(self.v[s]).view_as(p))

    # -- the update ---------------------------------------------------------------------------------
    def optimise(self, batch: dict[str, np.ndarray], order, epochs: int, hp: dict, where,
                 target_kl: float | None = None) -> dict[str, list[float]]:
        """``epochs`` passes over the minibatches ``order(epoch)`` (index arrays into ``batch``, drawn when the
        epoch starts); returns the per-minibatch statistics.

        ``batch``: obs (B, D) float32, actions (B,) int64 or (B, A) float32, logprobs, advantages,
        returns, values (B,) float32. ``hp``: lr, clip, clip_vloss, ent_coef, vf_coef, norm_adv,
        max_grad_norm. ``where(epoch, index)`` names a minibatch in errors; ``target_kl`` stops an epoch
        loop as CleanRL does (on the last minibatch's approx_kl).
        """
        self._load()
        stats: dict[str, list[float]] = {k: [] for k in
                                         ("policy_loss", "value_loss", "entropy", "grad_norm", "approx_kl", "clipfrac")}
        for epoch in range(epochs):
            for index, mb in enumerate(order(epoch)):
                for key, value in self._minibatch({k: v[mb] for k, v in batch.items()}, hp,
                                                  functools.partial(where, epoch, index)).items():
                    stats[key].append(value)
            if target_kl is not None and stats["approx_kl"][-1] > target_kl:
                break
        self._store()
        return stats

    def _minibatch(self, mb: dict[str, np.ndarray], hp: dict, where) -> dict[str, float]:
        n = len(mb["obs"])
        x = mb["obs"].reshape(n, -1).astype(np.float32, copy=False)  # MLPObs reads any observation as float
        actor_h, out = self._forward(self.actor, x)
        critic_h, value = self._forward(self.critic, x)
        value = value[:, 0]
        clip = hp["clip"]

        # policy: log-probability and entropy of the taken actions, and their derivatives
        if self.logstd is None:
            shifted = out - out.max(1, keepdims=True)
            logp = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
            probs = np.exp(logp)
            rows = np.arange(n)
            new_logprob = logp[rows, mb["actions"]]
            entropy = -(probs * logp).sum(1)
        else:
            logstd = self.logstd[0]
            z = (mb["actions"] - out) * np.exp(-logstd)
            new_logprob = (-0.5 * z * z - logstd - _HALF_LOG_2PI).sum(1)
            entropy = np.full(n, (0.5 + _HALF_LOG_2PI + logstd).sum(), np.float32)
        adv = mb["advantages"]
        if hp["norm_adv"]:
            adv = (adv - adv.mean()) / (adv.std(ddof=1) + np.float32(1e-8))
        log_ratio = new_logprob - mb["logprobs"]
        ratio = np.exp(log_ratio)
        clipped = np.clip(ratio, 1 - clip, 1 + clip)
        pg1, pg2 = -adv * ratio, -adv * clipped
        policy_loss = np.maximum(pg1, pg2).mean()
        first = _tie_weight(pg1, pg2)
        d_ratio = -adv * (first + (1 - first) * ((ratio >= 1 - clip) & (ratio <= 1 + clip))) / n
        d_logprob = d_ratio * ratio

        # value: (clipped) squared error
        returns, old = mb["returns"], mb["values"]
        unclipped = (value - returns) ** 2
        if hp["clip_vloss"]:
            delta = np.clip(value - old, -clip, clip)
            clipped_err = (old + delta - returns) ** 2
            value_loss = 0.5 * np.maximum(unclipped, clipped_err).mean()
            first = _tie_weight(unclipped, clipped_err)
            inside = (value - old >= -clip) & (value - old <= clip)
            d_value = (first * (value - returns) + (1 - first) * inside * (old + delta - returns)) / n
        else:
            value_loss = 0.5 * unclipped.mean()
            d_value = (value - returns) / n
        entropy_mean = entropy.mean()
        loss = policy_loss - hp["ent_coef"] * entropy_mean + hp["vf_coef"] * value_loss
        if not np.isfinite(loss):
            terms = {"policy_loss": policy_loss, "value_loss": value_loss, "entropy": entropy_mean}
            bad = [k for k, v in terms.items() if not np.isfinite(v)] or ["the weighted sum"]
            raise NonFiniteError(f"non-finite loss ({', '.join(bad)}) at {where()}; the update was stopped before "
                                 "the optimiser step, no checkpoint written; lower agent.learning_rate or check "
                                 "the rewards")

        # backward: heads, then the trunks
        ent_coef = hp["ent_coef"]
        if self.logstd is None:
            onehot = np.zeros_like(probs)
            onehot[rows, mb["actions"]] = 1.0
            d_out = d_logprob[:, None] * (onehot - probs) + (ent_coef / n) * probs * (logp + entropy[:, None])
        else:
            inv_std = np.exp(-self.logstd[0])
            d_out = d_logprob[:, None] * z * inv_std
            self.logstd[1][0] = (d_logprob[:, None] * (z * z - 1)).sum(0) - ent_coef
        self._backward(self.actor, self.actor_grad, actor_h, d_out)
        self._backward(self.critic, self.critic_grad, critic_h, (hp["vf_coef"] * d_value)[:, None])

        # global-norm clipping and Adam, on the flat vectors
        g = self.grad
        grad_norm = float(np.sqrt(np.dot(g, g)))
        if not math.isfinite(grad_norm):
            raise NonFiniteError(f"non-finite gradient in {', '.join(self._nonfinite()[:3])} at {where()}; "
                                 "the update was stopped before the optimiser step, no checkpoint written; "
                                 "lower agent.learning_rate or agent.max_grad_norm")
        coef = min(hp["max_grad_norm"] / (grad_norm + 1e-6), 1.0)
        if coef < 1.0:
            g *= np.float32(coef)
        self._adam(hp["lr"])
        return {"policy_loss": float(policy_loss), "value_loss": float(value_loss), "entropy": float(entropy_mean),
                "grad_norm": grad_norm, "approx_kl": float(((ratio - 1) - log_ratio).mean()),
                "clipfrac": float((np.abs(ratio - 1) > clip).mean())}

    def _forward(self, layers, x: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        """Inputs of every layer (x, then each hidden activation) and the head's output."""
        inputs = [x]
        for weight, bias in layers[:-1]:
            h = inputs[-1] @ weight.T
            h += bias
            inputs.append(np.tanh(h, out=h) if self.tanh else np.maximum(h, 0, out=h))
        weight, bias = layers[-1]
        out = inputs[-1] @ weight.T
        out += bias
        return inputs, out

    def _backward(self, layers, grads, inputs: list[np.ndarray], d_out: np.ndarray) -> None:
        """Write ∂loss/∂(weight, bias) of every layer into ``grads`` (views of the flat gradient)."""
        d = d_out
        for i in range(len(layers) - 1, -1, -1):
            d_weight, d_bias = grads[i]
            np.matmul(d.T, inputs[i], out=d_weight)
            d.sum(0, out=d_bias)
            if i:
                d = d @ layers[i][0]
                h = inputs[i]
                d *= (1 - h * h) if self.tanh else (h > 0)

    def _adam(self, lr: float) -> None:
        group = self.optimizer.param_groups[0]
        (beta1, beta2), eps = group["betas"], group["eps"]
        self.step += 1
        g, m, v = self.grad, self.m, self.v
        m += np.float32(1 - beta1) * (g - m)
        v *= np.float32(beta2)
        v += np.float32(1 - beta2) * g * g
        step_size = lr / (1 - beta1 ** self.step)
        denom = np.sqrt(v)
        denom *= np.float32(1 / math.sqrt(1 - beta2 ** self.step))
        denom += np.float32(eps)
        self.theta -= np.float32(step_size) * m / denom

    def _nonfinite(self) -> list[str]:
        return [self.names.get(id(p), "?") for p, s in zip(self.params, self.slices)
                if not np.isfinite(self.grad[s]).all()] or ["(unknown)"]


def _tie_weight(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The share of ``max(a, b)``'s gradient that goes to ``a``: 1, ½ on ties, 0 (torch.maximum's backward)."""
    return np.where(a > b, np.float32(1), np.where(a == b, np.float32(0.5), np.float32(0)))
