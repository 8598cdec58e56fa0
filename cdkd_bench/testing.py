"""Conformance checks for plugin authors: call them from your own tests.

    from cdkd_bench.testing import check_method
    def test_my_method_conforms():
        check_method(MyMethod)
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from cdkd_bench.api import FAMILIES, Batch, Method, MethodInfo, Outputs, Step
from cdkd_bench.training import forward_outputs


def check_search_space(method: type[Method]) -> None:
    """Every hparam declares a search space that contains its default."""
    for f in dataclasses.fields(method.Hparams):
        space = f.metadata.get("search")
        assert space is not None, f"{method.name}.{f.name} declares no search space (metadata={{'search': ...}})"
        if isinstance(f.default, bool) or isinstance(f.default, str):
            assert f.default in space, f"{method.name}.{f.name}: default {f.default!r} is not among {space}"
        else:
            low, high = space[0], space[1]
            assert low <= f.default <= high, f"{method.name}.{f.name}: default {f.default} outside {space}"
            if len(space) > 2:
                assert space[2] == "log" and low > 0, f"{method.name}.{f.name}: only 'log' scales with low > 0"


def _tiny_net(num_classes: int, width: int) -> nn.Module:
    """A small timm-interface network, for exercising a method without a real architecture."""

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU())
            self.fc = nn.Linear(width, num_classes)

        def forward_features(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x)

        def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
            pooled = x.mean(dim=(2, 3))
            return pooled if pre_logits else self.fc(pooled)

        def get_classifier(self) -> nn.Module:
            return self.fc

    return Tiny()


def check_method(method: type[Method], num_classes: int = 4, batch: int = 6) -> dict[str, torch.Tensor]:
    """Build the method with default hparams, run one step, and check the contract.

    Checks: declared attributes, search spaces, loss terms are finite scalars, gradients reach
    the student (when the method adds terms) and never reach the teacher.
    """
    assert isinstance(method.name, str) and method.name.isidentifier(), "name must be an identifier"
    assert isinstance(method.version, int) and method.version >= 1, "version must be an int >= 1"
    assert method.family in FAMILIES, f"family must be one of {FAMILIES}"
    check_search_space(method)
    torch.manual_seed(0)
    student, teacher = _tiny_net(num_classes, 5), _tiny_net(num_classes, 7)
    teacher.requires_grad_(False)
    info = MethodInfo(num_classes=num_classes, student_features=5, teacher_features=7, total_steps=10)
    component = method(method.Hparams(), info)

    def labels() -> torch.Tensor:
        return torch.arange(batch) % num_classes

    source = Batch(torch.randn(batch, 3, 8, 8), labels())
    target = Batch(torch.randn(batch, 3, 8, 8), labels() if method.uses_target_labels else None)
    batches = {"source": source, "target": target}
    teacher_outputs = (lambda role: forward_outputs(teacher, batches[role].x)) if method.needs_teacher else None
    step = Step(source, target, 0.5, lambda x: forward_outputs(student, x), teacher_outputs)
    terms = component.loss(step)
    assert isinstance(terms, dict), "loss() must return a dict of named terms"
    for name, value in terms.items():
        assert isinstance(value, torch.Tensor) and value.dim() == 0, f"term {name!r} must be a scalar tensor"
        assert math.isfinite(float(value.detach())), f"term {name!r} is not finite"
    if terms:
        torch.stack(list(terms.values())).sum().backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters()), "no gradient reaches the student"
    assert all(p.grad is None for p in teacher.parameters()), "a gradient reached the teacher"
    assert isinstance(step.student("source"), Outputs)
    return terms
