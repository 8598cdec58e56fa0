"""The student trained on labelled source data alone: the baseline every method must beat."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cdkd_bench import Method, RegisterMethods, Step, hookimpl


class SourceOnly(Method):
    """Supervised cross-entropy on labelled source data only (the engine's baseline term), no teacher."""

    name = "source_only"
    version = 1
    family = "baseline"
    reference = True

    @dataclass(frozen=True)
    class Hparams:
        pass

    def loss(self, step: Step) -> dict[str, torch.Tensor]:
        return {}


@hookimpl
def cdkd_register_methods(register: RegisterMethods) -> None:
    register(SourceOnly)
