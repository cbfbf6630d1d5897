"""Random Network Distillation."""

from __future__ import annotations

import gymnasium as gym
import torch

from mmssl.registry import INTRINSIC_REWARDS
from mmssl.rl.intrinsic.base import IntrinsicReward, RunningMeanStd, check_positive
from mmssl.rl.storage import Rollout


@INTRINSIC_REWARDS.register("rnd", modalities=("obs",))
class RND(IntrinsicReward):
    """RND (Burda et al. 2018, "Exploration by Random Network Distillation"): b(s') = ‖f(s') − f̂(s')‖².

    f̂: a fixed, randomly initialised target network; f: a predictor trained to match it, so the error is
    high on rarely seen states. Float inputs are whitened with running statistics and clipped to
    ±``obs_clip`` (the paper's observation normalisation; symbolic grid ids and agent features are used
    as they are); the bonus defaults to the paper's forward-filter normalisation (``normalise:
    return``). Only ``update_proportion`` of each rollout trains the
    predictor, which keeps the bonus from vanishing too fast with many envs. Shapes: next_obs (T, N, ...)
    → bonus (T, N).
    """

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, num_envs: int,
                 obs_clip: float = 5.0, update_proportion: float = 1.0, normalise: str = "return", **common):
        super().__init__(observation_space, action_space, num_envs, normalise=normalise, **common)
        check_positive("rnd", obs_clip=obs_clip, update_proportion=update_proportion)
        self.obs_clip, self.update_proportion = obs_clip, update_proportion
        self.target, self.predictor = self.make_encoder(), self.make_encoder()
        # whitening fits float inputs; agent features (size unknown up front) and grid ids are used as they are
        self.obs_stats = None if self.use_agent_features or self.grid else RunningMeanStd(self.preprocess.shape)
        self.make_optimizer([self.predictor])

    def whiten(self, x: torch.Tensor) -> torch.Tensor:
        if self.obs_stats is None:
            return x
        return ((x - self.obs_stats.mean.float()) / (self.obs_stats.std.float() + 1e-8)).clamp(-self.obs_clip, self.obs_clip)

    def error(self, x: torch.Tensor) -> torch.Tensor:
        """(B, ...) inputs → (B,) prediction error ‖f(x) − f̂(x)‖² (mean over output dims)."""
        x = self.whiten(x)
        with torch.no_grad():  # the target stays random: it is never in the optimiser nor in the graph
            target = self.target(x)
        return (self.predictor(x) - target).square().mean(-1)

    def batch_bonus(self, rollout: Rollout) -> torch.Tensor:
        x = self.rollout_inputs(rollout)
        if self.obs_stats is not None and self.obs_stats.count < 1:  # first rollout: start the statistics
            self.obs_stats.update(x)
        return self.error(x).reshape(rollout.shape)

    def learn(self, rollout: Rollout) -> dict[str, float]:
        x = self.rollout_inputs(rollout)
        if self.obs_stats is not None:
            self.obs_stats.update(x)

        def loss_fn(idx):
            err = self.error(x[idx])
            keep = (torch.rand_like(err) < self.update_proportion).float()
            loss = (err * keep).sum() / keep.sum().clamp(min=1)
            return loss, {"rnd_loss": loss.item()}

        return self.fit(loss_fn, len(x))
