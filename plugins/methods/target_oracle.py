"""The student trained with target labels: the upper bound of the table, not a method."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from cdkd_bench import Method, RegisterMethods, Step, hookimpl

from .common import check_positive


class TargetOracle(Method):
    """Supervised cross-entropy on labelled target train data (added to the source term); reads target labels."""

    name = "target_oracle"
    version = 1
    family = "baseline"
    reference = True
    uses_target = True
    uses_target_labels = True

    @dataclass(frozen=True)
    class Hparams:
        weight: float = field(default=1.0, metadata={"search": (0.1, 10.0, "log")})

        def __post_init__(self) -> None:
            check_positive(weight=self.weight)

    def loss(self, step: Step) -> dict[str, torch.Tensor]:
        if step.target.y is None:
            raise RuntimeError("target_oracle needs target labels; the engine withheld them")
        return {"target_ce": self.hparams.weight * F.cross_entropy(step.student("target").logits, step.target.y)}


@hookimpl
def cdkd_register_methods(register: RegisterMethods) -> None:
    register(TargetOracle)
