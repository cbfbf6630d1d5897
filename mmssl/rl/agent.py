"""The PPO actor-critic: an observation encoder from the registry plus policy and value heads.

The encoder is built from scratch (``encoder_for_space``) or loaded from a pretraining checkpoint
(``model`` keys ``encoders.<modality>.*``) and then frozen or fine-tuned. It lives in
``agent.encoders["obs"]`` so auxiliary objectives receive it exactly as pretraining objectives receive
theirs. Discrete action spaces get a Categorical policy, Box spaces a diagonal Gaussian with a
state-independent log-std (CleanRL's ``ppo_continuous_action.py``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from mmssl import checkpoint
from mmssl.encoders.obs import MLPObs, ModalityAdapter, encoder_for_space, layer_init
from mmssl.errors import ConfigError
from mmssl.rl.storage import Obs


@dataclass
class Step:
    """What the agent returns for a batch of observations (B, ...)."""

    features: torch.Tensor  # (B, D) actor-encoder features
    action: torch.Tensor  # (B,) discrete or (B, A) continuous
    logprob: torch.Tensor  # (B,)
    entropy: torch.Tensor | None  # (B,); None from ``act`` unless asked (a rollout never reads it)
    value: torch.Tensor  # (B,) extrinsic value
    value_int: torch.Tensor | None = None  # (B,) intrinsic value (second head), when configured


def _head(in_dim: int, out_dim: int, hidden: int, gain: float) -> nn.Module:
    if hidden <= 0:
        return layer_init(nn.Linear(in_dim, out_dim), gain)
    return nn.Sequential(layer_init(nn.Linear(in_dim, hidden)), nn.Tanh(), layer_init(nn.Linear(hidden, out_dim), gain))


class Agent(nn.Module):
    """Encoder → (policy head, value head[, intrinsic value head]); see the module docstring."""

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, encoder: dict,
                 separate_critic: bool = False, head_hidden: int = 0, encoder_checkpoint: str | None = None,
                 checkpoint_modality: str = "image", freeze_encoder: bool = False, intrinsic_value_head: bool = False):
        super().__init__()
        self.encoders = nn.ModuleDict({"obs": encoder_for_space(observation_space, encoder)})
        if encoder_checkpoint:
            load_pretrained(self.encoders["obs"], encoder_checkpoint, checkpoint_modality)
        self.freeze_encoder = freeze_encoder
        if freeze_encoder:
            self.encoders["obs"].requires_grad_(False)
        # CleanRL's classic-control agent has separate actor and critic networks; a shared trunk is the default
        self.critic_encoder = encoder_for_space(observation_space, encoder) if separate_critic else None
        dim = self.encoders["obs"].dim
        if isinstance(action_space, gym.spaces.Discrete):
            self.discrete, self.action_dim = True, int(action_space.n)
        elif isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1:
            self.discrete, self.action_dim = False, int(action_space.shape[0])
            self.actor_logstd = nn.Parameter(torch.zeros(1, self.action_dim))
        else:
            raise ConfigError(f"PPO handles Discrete and 1-D Box action spaces, not {action_space}")
        self.actor = _head(dim, self.action_dim, head_hidden, 0.01)
        self.critic = _head(dim, 1, head_hidden, 1.0)
        self.critic_int = _head(dim, 1, head_hidden, 1.0) if intrinsic_value_head else None
        self._wide_params, self._wide_key, self._wide_layers = None, None, None  # rollout cache, see `_wide`
        self._wide_numpy: list[tuple[np.ndarray, np.ndarray]] | None = None
        self._numpy_tanh = False  # the wide network's activation (set with it)

    @property
    def encoder(self) -> nn.Module:
        return self.encoders["obs"]

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_encoder:  # a frozen encoder keeps its normalisation statistics too
            self.encoders["obs"].eval()
        return self

    def features(self, obs: Obs) -> torch.Tensor:
        """(B, D) pooled features of the actor encoder."""
        return self.encoder(obs).pooled

    def values(self, obs: Obs, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B,) extrinsic value and (B,) intrinsic value (or None)."""
        critic_features = features if self.critic_encoder is None else self.critic_encoder(obs).pooled
        value_int = None if self.critic_int is None else self.critic_int(critic_features).squeeze(-1)
        return self.critic(critic_features).squeeze(-1), value_int

    def _policy(self, out: torch.Tensor, action: torch.Tensor | None, deterministic: bool = False,
                generator: torch.Generator | None = None, entropy: bool = True):
        """Actor output (B, A) → (action — sampled when None, logprob, entropy or None), each (B,) or (B, A).

        Written out rather than through torch.distributions: building a Categorical or Normal per call
        (argument handling, logsumexp normalisation, broadcasting) was a fifth of a CartPole rollout step.
        """
        if self.discrete:
            logp = out.log_softmax(-1)
            if action is None and deterministic:
                action = logp.argmax(-1)
            elif action is None:  # inverse-CDF sampling: half the cost of torch.multinomial on a few actions
                u = torch.rand(logp.shape[:-1] + (1,), generator=generator, device=logp.device)
                cdf = logp.exp().cumsum(-1)
                action = torch.searchsorted(cdf, u).squeeze(-1).clamp_(max=logp.shape[-1] - 1)
            logprob = logp.gather(-1, action.long().unsqueeze(-1)).squeeze(-1)
            return action, logprob, -(logp.exp() * logp).sum(-1) if entropy else None
        logstd = self.actor_logstd.expand_as(out)
        if action is None:
            action = out if deterministic else out + logstd.exp() * torch.randn(out.shape, generator=generator,
                                                                                device=out.device)
        logprob = (-0.5 * ((action - out) / logstd.exp()).pow(2) - logstd - 0.5 * math.log(2 * math.pi)).sum(-1)
        return action, logprob, (0.5 + 0.5 * math.log(2 * math.pi) + logstd).sum(-1) if entropy else None

    def act(self, obs: Obs, deterministic: bool = False, generator: torch.Generator | None = None,
            entropy: bool = False) -> Step:
        """Sample (or take the mode of) the policy for observations (B, ...); ``entropy=True`` also returns it.

        Without autograd (rollouts, evaluation) and with linear heads, actor and critic run as one wide
        network (`_wide`): the same numbers in a third of the kernel calls.
        """
        layers = None if torch.is_grad_enabled() else self._wide()
        if layers is not None and self._numpy_rollout(obs):
            return self._act_numpy(obs, deterministic, generator, entropy)
        if layers is None:
            features = self.features(obs)
            out = self.actor(features)
            value, value_int = self.values(obs, features)
        else:
            features, out, value, value_int = self._wide_forward(obs, layers)
        action, logprob, entropy = self._policy(out, None, deterministic, generator, entropy)
        return Step(features, action, logprob, entropy, value, value_int)

    def rollout_act(self, obs: Obs, steps: int):
        """``act`` (sampling, no entropy) for a rollout whose first observations are ``obs``: the weights stay
        fixed for its length, so the path (numpy or torch) and the wide network are chosen once, not per step.

        On the numpy path the observations' shape is checked once (a rollout's all come from one vector env)
        and the uniforms of its ``steps`` steps are drawn in one call: the same numbers, in the same order,
        as ``steps`` draws of one row each from torch's generator.
        """
        if not torch.is_grad_enabled() and self._wide() is not None and self._numpy_rollout(obs):
            self.encoder.check_input(obs)
            draws = iter(torch.rand((steps, len(obs), 1)).numpy())
            return functools.partial(self._act_numpy, deterministic=False, generator=None, entropy=False,
                                     draws=draws)
        return self.act

    def bootstrap(self, obs: Obs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(features, value, intrinsic value or None) of observations, drawing no random numbers: what a
        rollout needs of final and last observations (through the same fast paths as ``act``)."""
        step = self.act(obs, deterministic=True)
        return step.features, step.value, step.value_int

    def evaluate(self, obs: Obs, action: torch.Tensor) -> Step:
        """Log-probability, entropy and values of given actions (B, ...) under the current policy."""
        features = self.features(obs)
        _, logprob, entropy = self._policy(self.actor(features), action)
        value, value_int = self.values(obs, features)
        return Step(features, action, logprob, entropy, value, value_int)

    # -- rollouts: actor and critic as one wide network -------------------------------------------
    def _wide(self) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """(weightᵀ, bias) per layer of one network computing [policy output | value | intrinsic value].

        With a separate critic of MLP trunks (CleanRL's classic-control agent), the trunks' first layers
        are stacked and the later ones placed block-diagonally, so the wide network's hidden state is
        [actor features | critic features]; with a shared trunk only the heads are stacked. Rebuilt when
        a parameter changes (its version counter or storage), so a rollout of 128 steps builds it once.
        None when a head is not linear or the trunks are not two MLPs of one shape.
        """
        if self._wide_params is None:  # which parameters, if any: decided once
            parts = self._wide_parts()
            self._wide_params = [p for m in (*parts[0], *parts[1]) for p in m.parameters()] if parts else []
        if not self._wide_params:
            return None
        key = tuple((p.data_ptr(), p._version) for p in self._wide_params)
        if key != self._wide_key:
            trunks, heads = self._wide_parts()
            with torch.no_grad():
                layers = []
                if trunks:
                    actor_lin = [m for m in trunks[0].net if isinstance(m, nn.Linear)]
                    critic_lin = [m for m in trunks[1].net if isinstance(m, nn.Linear)]
                    for i, (a, c) in enumerate(zip(actor_lin, critic_lin)):
                        weight = torch.cat([a.weight, c.weight]) if i == 0 else torch.block_diag(a.weight, c.weight)
                        layers.append((weight, torch.cat([a.bias, c.bias])))
                    # heads: policy reads the actor half, the value heads the critic half
                    weight = torch.block_diag(self.actor.weight, torch.cat([h.weight for h in heads[1:]]))
                else:
                    weight = torch.cat([h.weight for h in heads])
                layers.append((weight, torch.cat([h.bias for h in heads])))
            self._wide_key, self._wide_layers = key, [(w.t().contiguous(), b) for w, b in layers]
            self._wide_numpy = [(w.numpy(), b.numpy()) for w, b in self._wide_layers] \
                if self._wide_layers[0][0].device.type == "cpu" else None
            self._numpy_tanh = getattr(self.encoder, "activation", None) == "tanh"
        return self._wide_layers

    def _numpy_rollout(self, obs: Obs) -> bool:
        """Whether ``act`` runs in numpy: a discrete policy on separate MLP trunks, float32 CPU observations.

        For CleanRL's 4→64→64 networks on a few envs each torch op costs 5–20 µs of dispatch for well
        under a microsecond of arithmetic; the same forward in numpy is ~5× cheaper per rollout step.
        """
        return (self.discrete and self.critic_encoder is not None and self._wide_numpy is not None
                and isinstance(obs, torch.Tensor) and obs.device.type == "cpu" and obs.dtype == torch.float32)

    def _act_numpy(self, obs: torch.Tensor, deterministic: bool, generator: torch.Generator | None,
                   entropy: bool, draws: Iterator[np.ndarray] | None = None) -> Step:
        """``act`` through the `_wide` layers in numpy (same numbers as the torch path up to float rounding;
        the same uniform draws from torch's generator, so the same actions). ``draws``: the uniforms drawn
        ahead for a rollout by ``rollout_act``, which has also checked the observations' shape."""
        if draws is None:
            self.encoder.check_input(obs)
        h = obs.numpy().reshape(len(obs), -1)
        tanh = self._numpy_tanh
        for weight_t, bias in self._wide_numpy[:-1]:
            h = h @ weight_t
            h += bias
            h = np.tanh(h, out=h) if tanh else np.maximum(h, 0, out=h)
        out = h @ self._wide_numpy[-1][0]
        out += self._wide_numpy[-1][1]
        a = self.action_dim
        logits = out[:, :a]
        shifted = logits - logits.max(-1, keepdims=True)
        logp = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
        probs = np.exp(logp)
        if deterministic:
            action = logp.argmax(-1)
        else:  # inverse-CDF sampling as `_policy`: the first action whose CDF reaches u
            u = next(draws) if draws is not None else torch.rand((len(obs), 1), generator=generator).numpy()
            action = np.minimum((probs.cumsum(-1) < u).sum(-1), a - 1)
        rows = np.arange(len(obs))
        step_entropy = torch.from_numpy(-(probs * logp).sum(-1)) if entropy else None
        value_int = torch.from_numpy(out[:, a + 1].copy()) if self.critic_int is not None else None
        return Step(torch.from_numpy(h[:, :self.encoder.dim].copy()), torch.from_numpy(action.astype(np.int64)),
                    torch.from_numpy(logp[rows, action]), step_entropy, torch.from_numpy(out[:, a].copy()), value_int)

    def _wide_parts(self) -> tuple[list[nn.Module], list[nn.Module]] | None:
        """(trunks: [] for a shared one, else the actor and critic MLPs; heads: policy, value[, intrinsic value]),
        or None when there is no wide network for this agent."""
        heads = [self.actor, self.critic] + ([self.critic_int] if self.critic_int is not None else [])
        if not all(isinstance(h, nn.Linear) for h in heads):
            return None
        trunks = [] if self.critic_encoder is None else [self.encoder, self.critic_encoder]
        if trunks and not (all(type(t) is MLPObs for t in trunks) and len(trunks[0].net) == len(trunks[1].net) > 0
                           and trunks[0].activation == trunks[1].activation):
            return None
        return trunks, heads

    def _wide_forward(self, obs: Obs, layers: list[tuple[torch.Tensor, torch.Tensor]]):
        """features (B, D), policy output (B, A), value (B,), intrinsic value (B,) or None via `_wide` layers."""
        if self.critic_encoder is None:
            features = h = self.features(obs)
        else:
            self.encoder.check_input(obs)
            h = obs.flatten(1).float()
            act = torch.tanh if self.encoder.activation == "tanh" else torch.relu
            for weight_t, bias in layers[:-1]:
                h = act(torch.addmm(bias, h, weight_t))
            features = h[:, :self.encoder.dim]
        out = torch.addmm(layers[-1][1], h, layers[-1][0])
        a = self.action_dim
        value_int = out[:, a + 1] if self.critic_int is not None else None
        return features, out[:, :a], out[:, a], value_int


def load_pretrained(encoder: nn.Module, path: str, modality: str) -> None:
    """Load ``model`` entries ``encoders.<modality>.*`` of a pretraining checkpoint (a ``step_*.pt`` file or a run
    folder: its newest valid one) into ``encoder``.

    An encoder wrapped in ``ModalityAdapter`` (an image tower reading pixel observations) receives the
    weights in its inner module, whose parameter names match the pretraining run's.
    """
    state = checkpoint.find(path)[2]
    model = state.get("model", state)
    sub = checkpoint.encoder_weights(model, modality)
    if not sub:
        found = sorted({k.split(".")[1] for k in model if k.startswith("encoders.")})
        raise ConfigError(f"checkpoint {path} has no encoder for modality {modality!r} (it has {found}); "
                          "set agent.checkpoint_modality")
    target = encoder.inner if isinstance(encoder, ModalityAdapter) else encoder
    checkpoint.load_matching(target, sub, what=f"pretrained {modality} encoder")


def scale_action(action: np.ndarray, space: gym.Space) -> np.ndarray:
    """Clip continuous actions to the space's bounds (the Gaussian is unbounded); discrete pass through."""
    if isinstance(space, gym.spaces.Box):
        return np.clip(action, space.low, space.high).astype(space.dtype)
    return action
