"""Intrinsic rewards, registered in ``mmssl.registry.INTRINSIC_REWARDS`` (watch → compute → update).

Build one with ``INTRINSIC_REWARDS.build(name, observation_space, action_space, num_envs, **cfg)``.
"""

from mmssl.rl.intrinsic import (  # noqa: F401  (registers)
    counts,
    disagreement,
    e3b,
    goal_similarity,
    icm,
    mix,
    ngu,
    re3,
    rnd,
)
from mmssl.rl.intrinsic.base import IntrinsicReward, RunningMeanStd
from mmssl.rl.intrinsic.mix import MixedIntrinsicReward

__all__ = ["IntrinsicReward", "MixedIntrinsicReward", "RunningMeanStd"]
