"""Small method plugins used by several tests, registered like any plugin object."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cdkd_bench import Method, Step, hookimpl


class SpyOnTarget(Method):
    """Records what target labels the engine revealed; adds no loss."""

    name = "spy"
    family = "adaptation"
    uses_target = True
    seen_target_labels: list[object] = []

    @dataclass(frozen=True)
    class Hparams:
        pass

    def loss(self, step: Step) -> dict[str, torch.Tensor]:
        SpyOnTarget.seen_target_labels.append(step.target.y)
        return {}


class Broken(Method):
    """Fails on its first step, like a buggy contributed method."""

    name = "broken"
    family = "adaptation"

    @dataclass(frozen=True)
    class Hparams:
        pass

    def loss(self, step: Step) -> dict[str, torch.Tensor]:
        raise RuntimeError("this method is broken")


class Diverges(Method):
    """Returns a non-finite loss term."""

    name = "diverges"
    family = "adaptation"

    @dataclass(frozen=True)
    class Hparams:
        pass

    def loss(self, step: Step) -> dict[str, torch.Tensor]:
        return {"boom": step.student("source").logits.sum() * float("nan")}


class TestMethods:
    @hookimpl
    def cdkd_register_methods(self, register):  # type: ignore[no-untyped-def]
        for method in (SpyOnTarget, Broken, Diverges):
            register(method)


class Observer:
    def __init__(self) -> None:
        self.before: list[str] = []
        self.after: list[tuple[str, str]] = []

    @hookimpl
    def cdkd_before_run(self, spec):  # type: ignore[no-untyped-def]
        self.before.append(spec["recipe"])

    @hookimpl
    def cdkd_after_run(self, spec, result):  # type: ignore[no-untyped-def]
        self.after.append((spec["recipe"], result["status"]))
