"""Observation and reward normalisation with state in torch buffers (checkpointed, exactly resumable).

Same maths as gymnasium's ``NormalizeObservation`` / ``NormalizeReward`` wrappers (which CleanRL's
continuous PPO uses), but kept in the agent loop instead of the envs so the statistics live in a
``state_dict`` rather than inside pickled wrapper objects.
"""

from __future__ import annotations

import torch
from torch import nn


class RunningMeanStd(nn.Module):
    """Running mean/variance over the leading dimension (Chan et al.'s parallel update), float64.

    With ``sync_ranks`` (multi-rank PPO) the batch moments are all-reduced over torch.distributed ranks
    first, so every rank keeps the statistics of the union of all ranks' batches.
    """

    mean: torch.Tensor  # buffers (registered in __init__), declared for type checkers
    var: torch.Tensor
    count: torch.Tensor

    def __init__(self, shape: tuple[int, ...] = (), epsilon: float = 1e-4, sync_ranks: bool = False):
        super().__init__()
        self.sync_ranks = sync_ranks
        self.register_buffer("mean", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(shape, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(epsilon, dtype=torch.float64))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        x = x.detach().to(torch.float64).reshape(-1, *self.mean.shape)
        if self.sync_ranks:
            n, batch_mean, batch_var = _global_moments(x)
        else:
            n, batch_mean, batch_var = x.shape[0], x.mean(0), x.var(0, unbiased=False)
        delta, total = batch_mean - self.mean, self.count + n
        m2 = self.var * self.count + batch_var * n + delta.square() * self.count * n / total
        self.mean.add_(delta * n / total)
        self.var.copy_(m2 / total)
        self.count.copy_(total)

    @property
    def std(self) -> torch.Tensor:
        return self.var.sqrt()


def _global_moments(x: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor]:
    """(count, mean, biased variance) of the rows of ``x`` (n, ...) over every rank's rows."""
    import torch.distributed as dist

    packed = torch.cat([torch.tensor([float(x.shape[0])], dtype=torch.float64, device=x.device),
                        x.sum(0).flatten(), x.square().sum(0).flatten()])
    dist.all_reduce(packed)
    n, d = packed[0], x[0].numel()
    mean = packed[1:1 + d] / n
    var = (packed[1 + d:] / n - mean.square()).clamp_min(0)
    return int(n.item()), mean.reshape(x.shape[1:]), var.reshape(x.shape[1:])


class ObsNormalizer(nn.Module):
    """``clip((x - μ) / sqrt(σ² + ε), ±clip)`` with running μ, σ² of every observation seen; identity when off."""

    def __init__(self, shape: tuple[int, ...], enabled: bool, clip: float = 10.0, epsilon: float = 1e-8):
        super().__init__()
        self.enabled, self.clip, self.epsilon = enabled, clip, epsilon
        self.stats = RunningMeanStd(shape)

    def forward(self, obs: torch.Tensor, update: bool = True) -> torch.Tensor:
        if not self.enabled:
            return obs
        if update:
            self.stats.update(obs)
        z = (obs.double() - self.stats.mean) / torch.sqrt(self.stats.var + self.epsilon)
        return z.clamp(-self.clip, self.clip).float()


class RewardScaler(nn.Module):
    """Divide rewards by the running std of the discounted return ``R ← γ·R·(1 - done) + r`` (per env)."""

    def __init__(self, num_envs: int, gamma: float, enabled: bool, clip: float = 10.0, epsilon: float = 1e-8):
        super().__init__()
        self.enabled, self.gamma, self.clip, self.epsilon = enabled, gamma, clip, epsilon
        self.stats = RunningMeanStd(())
        self.register_buffer("returns", torch.zeros(num_envs, dtype=torch.float64))

    def forward(self, rewards: torch.Tensor, dones: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return rewards
        self.returns.mul_(self.gamma).add_(rewards.double())
        self.stats.update(self.returns)
        self.returns.mul_(1 - dones.double())
        scaled = rewards.double() / torch.sqrt(self.stats.var + self.epsilon)
        return scaled.clamp(-self.clip, self.clip).float()
