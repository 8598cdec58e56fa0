"""Saito et al. 2018, "Maximum Classifier Discrepancy for Unsupervised Domain Adaptation" (CVPR 2018).
https://arxiv.org/abs/1712.02560

MCD trains a feature generator G against two classifiers F1 and F2. F1 is the student's own head
(``get_classifier()``) and F2 a linear layer this component builds on the pooled features (the
paper's classifiers are small MLPs; here both are linear, like the student's head). G is every
other student parameter. The discrepancy between two predictions is the mean absolute difference
of their probabilities, ``d(p1, p2) = mean over images and classes of |p1 - p2|``. Each training step
is the paper's three phases, driven through the engine's control object: (A) G, F1 and F2 (and
every other component of the recipe, whose terms are added) minimise the source cross-entropy of
both classifiers; (B) with G fixed, F1 and F2 minimise their source cross-entropy minus their
discrepancy on the target batch, so they disagree where target features lie outside the source
support; (C) with F1 and F2 fixed, G minimises that discrepancy ``generator_steps`` times (the
paper's ``num_k``: 4 for digits). Every phase updates only its parameter set (the others get no
gradient, which AdamW leaves untouched) and the networks are run again before the next phase. In
phase B the features are detached (G is fixed, so no gradient is needed through it); the logits
of F1 are then computed from them with the same head, which gives the same values as the
network's logits. ``loss`` raises: the engine calls ``update`` for a component that owns the step.
The logged terms are phase A's two cross-entropies, the discrepancy the classifiers maximised in
phase B, and the discrepancy at the last generator step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from cdkd_bench import Method, MethodInfo, RegisterMethods, Step, hookimpl
from cdkd_bench.api import StepControl

GENERATOR_STEPS = (1, 2, 4)


def classifier_discrepancy(logits1: torch.Tensor, logits2: torch.Tensor) -> torch.Tensor:
    """``mean |softmax(logits1) - softmax(logits2)|`` over the batch and the classes."""
    return (logits1.float().softmax(dim=1) - logits2.float().softmax(dim=1)).abs().mean()


def student_head(student: nn.Module) -> nn.Module:
    """The student's classifier F1 (timm's ``get_classifier``)."""
    classifier = getattr(student, "get_classifier", None)
    if not callable(classifier):
        raise TypeError(f"mcd needs a student with a classifier head (get_classifier()), and {type(student).__name__} has none")
    head = classifier()
    assert isinstance(head, nn.Module)
    return head


class MCD(Method):
    """Maximum classifier discrepancy: two heads disagree on target, the features make them agree."""

    name = "mcd"
    version = 1
    family = "adaptation"
    uses_target = True
    needs_teacher = False
    owns_step = True

    @dataclass(frozen=True)
    class Hparams:
        generator_steps: int = field(default=4, metadata={"search": GENERATOR_STEPS})

        def __post_init__(self) -> None:
            if self.generator_steps < 1:
                raise ValueError(f"generator_steps must be at least 1, got {self.generator_steps}")

    def __init__(self, hparams: Hparams, info: MethodInfo) -> None:
        super().__init__(hparams, info)
        self.classifier2 = nn.Linear(info.student_features, info.num_classes)

    def loss(self, step: Step) -> dict[str, torch.Tensor]:
        raise RuntimeError("mcd owns the training step: the engine calls its update(control), never loss(step)")

    def update(self, control: StepControl) -> dict[str, torch.Tensor]:
        step, student = control.step, control.student
        head = student_head(student)
        classifiers = [*head.parameters(), *self.classifier2.parameters()]
        head_ids = {id(p) for p in head.parameters()}
        generator = [p for p in student.parameters() if id(p) not in head_ids]
        labels = step.source.y
        assert labels is not None, "mcd needs the labelled source batch"

        # A: everything on the source cross-entropy of both classifiers (plus the recipe's other terms).
        source_ce = control.source_ce()
        classifier2_ce = F.cross_entropy(self.classifier2(step.student("source").features), labels)
        joint = source_ce + classifier2_ce + sum(control.others().values(), torch.zeros((), device=source_ce.device))
        control.backward(joint)
        control.update()
        control.recompute()

        # B: G fixed; the classifiers stay right on source and disagree on target.
        source_features = step.student("source").features.detach()
        supervised = F.cross_entropy(head(source_features), labels) + F.cross_entropy(self.classifier2(source_features), labels)
        target_features = step.student("target").features.detach()
        discrepancy = classifier_discrepancy(head(target_features), self.classifier2(target_features))
        control.backward(supervised - discrepancy)
        control.update(classifiers)
        control.recompute()

        # C: the classifiers fixed; G makes them agree on target.
        generator_discrepancy = discrepancy
        for _ in range(self.hparams.generator_steps):
            target = step.student("target")
            generator_discrepancy = classifier_discrepancy(target.logits, self.classifier2(target.features))
            control.backward(generator_discrepancy)
            control.update(generator)
            control.recompute()

        return {
            "source_ce": source_ce.detach(),
            "classifier2_ce": classifier2_ce.detach(),
            "discrepancy": discrepancy.detach(),
            "generator_discrepancy": generator_discrepancy.detach(),
        }


@hookimpl
def cdkd_register_methods(register: RegisterMethods) -> None:
    register(MCD)
