"""Small method plugins used by several tests, registered like any plugin object."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cdkd_bench import Method, Selector, Step, hookimpl


class SpyOnTarget(Method):
    """Records what target labels the engine revealed (in the unlabelled batch and the regime's labelled batch); adds no loss."""

    name = "spy"
    family = "adaptation"
    uses_target = True
    seen_target_labels: list[object] = []
    seen_labelled: list[object] = []  # (indices, labels) of each step's labelled target batch, or None

    @dataclass(frozen=True)
    class Hparams:
        pass

    def loss(self, step: Step) -> dict[str, torch.Tensor]:
        SpyOnTarget.seen_target_labels.append(step.target.y)
        labelled = step.labelled_target
        SpyOnTarget.seen_labelled.append(None if labelled is None else (labelled.index, labelled.y))
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


class TwoPhase(Method):
    """Owns the step: a joint update with the other components' terms, then an update of its own head only."""

    name = "two_phase"
    family = "adaptation"
    uses_target = True
    owns_step = True
    phases: list[tuple[str, list[str]]] = []

    @dataclass(frozen=True)
    class Hparams:
        pass

    def __init__(self, hparams, info) -> None:  # type: ignore[no-untyped-def]
        super().__init__(hparams, info)
        self.head = torch.nn.Linear(info.student_features, info.num_classes)

    def update(self, control):  # type: ignore[no-untyped-def]
        others = control.others()
        first = control.source_ce() + sum(others.values(), torch.zeros(()))
        control.backward(first)
        control.update()
        TwoPhase.phases.append(("joint", sorted(others)))
        control.recompute()
        features = control.step.student("target").features.detach()
        p = self.head(features).softmax(1)
        entropy = -(p * p.clamp_min(1e-8).log()).sum(1).mean()
        control.backward(entropy)
        control.update(self.head.parameters())
        TwoPhase.phases.append(("head", []))
        return {"joint": first.detach(), "entropy": entropy.detach()}


class AnotherOwner(TwoPhase):
    """A second component that owns the step (never allowed with another)."""

    name = "another_owner"


class ReadsViews(Method):
    """Reads the weak and strong views of the target batch; records what it saw."""

    name = "reads_views"
    family = "adaptation"
    uses_target = True
    views = {"target": ("weak", "strong")}
    seen: list[tuple[bool, bool, bool]] = []

    @dataclass(frozen=True)
    class Hparams:
        pass

    def loss(self, step: Step) -> dict[str, torch.Tensor]:
        plain, weak, strong = step.batch("target"), step.batch("target", "weak"), step.batch("target", "strong")
        ReadsViews.seen.append((
            not torch.equal(plain.x, weak.x), not torch.equal(weak.x, strong.x), torch.equal(plain.index, strong.index),
        ))
        p = step.student("target", "weak").logits.softmax(1).detach()
        return {"consistency": -(p * step.student("target", "strong").logits.log_softmax(1)).sum(1).mean()}


class ReadsUnknownView(ReadsViews):
    """Asks for a view no suite defines."""

    name = "reads_unknown_view"
    views = {"target": ("blurry",)}


class CountsEvaluations(Method):
    """Shifts a copy's classifier bias before each evaluation (a stand-in for AdaBN), and counts the calls."""

    name = "counts_evaluations"
    family = "adaptation"
    calls: list[int] = []

    @dataclass(frozen=True)
    class Hparams:
        pass

    def loss(self, step: Step) -> dict[str, torch.Tensor]:
        return {}

    def before_evaluation(self, student, target_unlabelled):  # type: ignore[no-untyped-def]
        CountsEvaluations.calls.append(len(target_unlabelled))
        with torch.no_grad():
            student.get_classifier().bias.add_(100.0 * torch.arange(student.get_classifier().bias.numel()))


class ContractV2Methods:
    @hookimpl
    def cdkd_register_methods(self, register):  # type: ignore[no-untyped-def]
        for method in (TwoPhase, AnotherOwner, ReadsViews, ReadsUnknownView, CountsEvaluations):
            register(method)

    @hookimpl
    def cdkd_register_selectors(self, register):  # type: ignore[no-untyped-def]
        register(Selector("first", lambda history: 0, description="the first evaluated checkpoint (for tests)"))


class KillsItsWorker:
    """A job spec whose unpickling ends the process at once, as a crash in native code would."""

    def __reduce__(self):  # type: ignore[no-untyped-def]
        import os

        return (os._exit, (3,))
