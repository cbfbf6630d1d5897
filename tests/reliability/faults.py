"""A registered objective that turns its loss or its gradient non-finite on a chosen call (fault injection)."""

from __future__ import annotations

from mmssl.objectives.base import Objective
from mmssl.registry import OBJECTIVES
from mmssl.types import ObjectiveOutput


@OBJECTIVES.register("test_nonfinite", modalities=("image",))
class NonFiniteAt(Objective):
    """Loss ``0·mean(pooled)`` (finite, no pull on training), except on forward call ``at_call``:
    ``where="loss"`` makes the loss NaN, ``where="gradient"`` keeps it finite but makes its gradient Inf."""

    modalities = ("image",)

    def __init__(self, encoders, modality: str | None = None, at_call: int = 1, where: str = "loss"):
        super().__init__(encoders, modality)
        self.at_call, self.where, self.calls = at_call, where, 0

    def forward(self, batch, encoders) -> ObjectiveOutput:
        self.calls += 1
        pooled = encoders[self.modality](self.inputs(batch)).pooled
        loss = 0.0 * pooled.mean()
        if self.calls == self.at_call and self.where == "loss":
            loss = loss + float("nan")
        elif self.calls == self.at_call:
            pooled.register_hook(lambda grad: grad * float("inf"))
            loss = loss + 1e-3 * pooled.mean()  # finite value, infinite gradient
        return ObjectiveOutput(loss, {})
