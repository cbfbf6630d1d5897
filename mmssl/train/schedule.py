"""Learning-rate schedules shared by the loops: LR multipliers as functions of the update index."""

from __future__ import annotations

import math
from collections.abc import Callable


def warmup_cosine(warmup_steps: int, total_steps: int, final_fraction: float) -> Callable[[int], float]:
    """LR multiplier: linear warmup to 1 over ``warmup_steps``, then cosine to ``final_fraction``
    (pretraining and fine-tuning, through ``torch.optim.lr_scheduler.LambdaLR``)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def linear_decay(total_steps: int) -> Callable[[int], float]:
    """LR multiplier ``1 − step / total_steps``: 1 at the first update, 1/total at the last (CleanRL's PPO anneal)."""

    def factor(step: int) -> float:
        return 1.0 - step / total_steps

    return factor
