"""Conformance checks for plugin authors: call them from your own tests.

    from cdkd_bench.testing import check_method
    def test_my_method_conforms():
        check_method(MyMethod)

``check_method`` exercises the whole contract v2 on a small timm-interface teacher/student
pair (two stages each, different widths and spatial sizes, so a component that assumes
equal shapes fails here): intermediates, per-sample indices, views, an owned step, own
parameters, ``before_evaluation``, the extremes of every search space, and pickling.

The other plugin kinds have their checks in :mod:`cdkd_bench.conformance`, re-exported here:
``check_domain``, ``check_suite``, ``check_architecture``, ``check_selector`` and
``check_executor``. The pytest fixtures ``cdkd_host``, ``cdkd_tiny_suite``, ``cdkd_step`` and
``cdkd_pair`` (:mod:`cdkd_bench.pytest_plugin`) are available in every test once cdkd-bench is installed.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import pickle
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cdkd_bench.api import FAMILIES, Batch, Method, MethodInfo, Outputs, Step
from cdkd_bench.conformance import check_architecture, check_domain, check_executor, check_selector, check_suite  # noqa: F401
from cdkd_bench.data import Split
from cdkd_bench.hparams import search_choices
from cdkd_bench.networks import forward_outputs, network_info
from cdkd_bench.training import fit

IMAGE_SIZE = 16


def check_search_space(method: type[Method]) -> None:
    """Every hparam declares a search space that contains its default."""
    for f in dataclasses.fields(method.Hparams):
        space = f.metadata.get("search")
        assert space is not None, f"{method.name}.{f.name} declares no search space (metadata={{'search': ...}})"
        choices = search_choices(space)
        if choices is not None:
            assert f.default in choices, f"{method.name}.{f.name}: default {f.default!r} is not among {choices}"
        else:
            low, high = space[0], space[1]
            assert low <= f.default <= high, f"{method.name}.{f.name}: default {f.default} outside {space}"
            if len(space) > 2:
                assert low > 0, f"{method.name}.{f.name}: a 'log' scale needs low > 0"


def search_extremes(method: type[Method]) -> Iterator[tuple[str, Any]]:
    """(field, value) for both ends of every numeric range and every choice of every categorical space."""
    for f in dataclasses.fields(method.Hparams):
        space = f.metadata["search"]
        choices = search_choices(space)
        values = choices if choices is not None else (space[0], space[1])
        for value in values:
            yield f.name, type(f.default)(value) if isinstance(f.default, int | float) and not isinstance(f.default, bool) else value


class TinyNet(nn.Module):
    """A three-stage timm-interface network (``forward_intermediates``, ``feature_info``) for the kit."""

    def __init__(self, num_classes: int, widths: Sequence[int], strides: Sequence[int]) -> None:
        super().__init__()
        channels = [3, *widths]
        self.stages = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels[i], channels[i + 1], 3, stride=strides[i], padding=1), nn.BatchNorm2d(channels[i + 1]),
                          nn.ReLU())
            for i in range(len(widths))
        )
        self.fc = nn.Linear(widths[-1], num_classes)
        self.feature_info = [
            {"num_chs": w, "reduction": math.prod(strides[: i + 1]), "module": f"stages.{i}"} for i, w in enumerate(widths)
        ]

    def forward_intermediates(self, x: torch.Tensor, indices: Sequence[int], output_fmt: str = "NCHW") -> tuple[torch.Tensor, list]:
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return x, [maps[i] for i in indices]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        pooled = x.mean(dim=(2, 3))
        return pooled if pre_logits else self.fc(pooled)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def make_step(
    student: nn.Module,
    teacher: nn.Module | None,
    source: Batch,
    target: Batch,
    progress: float = 0.5,
    stages: Sequence[int] = (),
    views: Mapping[str, Callable[[torch.Tensor], torch.Tensor]] | None = None,
) -> Step:
    """A training step over real networks, as the engine builds it, for testing a component.

    ``stages``: intermediate maps to compute (as the components' ``intermediates``);
    ``views``: view name → a function of the images (applied to either domain's batch).
    The teacher runs without gradients.
    """
    transforms = dict(views or {})

    def view_maker(_domain: str, view: str, plain: Batch) -> Batch:
        return Batch(transforms[view](plain.x), plain.y, plain.index)

    def teacher_forward(_domain: str, _view: str, batch: Batch) -> Outputs:
        assert teacher is not None
        return forward_outputs(teacher, batch.x, stages)

    return Step(source, target, progress, lambda x: forward_outputs(student, x, stages),
                teacher_forward if teacher is not None else None, view_maker)


def _kit_views(method: type[Method]) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """A stand-in augmentation for every view the method declares (a flip plus a little noise)."""
    names = {view for views in method.views.values() for view in views}
    return {name: (lambda x: x.flip(3) + 0.05 * torch.randn_like(x)) for name in names}


def _networks(num_classes: int) -> tuple[TinyNet, TinyNet, MethodInfo, int, int]:
    student = TinyNet(num_classes, (4, 6, 8), (1, 2, 2))   # maps of 16x16, 8x8 and 4x4
    teacher = TinyNet(num_classes, (5, 7, 9), (2, 2, 1))   # maps of 8x8, 4x4 and 4x4: other widths, other sizes
    teacher.eval().requires_grad_(False)
    source_size, target_size = 24, 20
    cpu = torch.device("cpu")
    info = MethodInfo(
        num_classes=num_classes, student_features=8, teacher_features=9, total_steps=4,
        student=network_info(student, "kit-student", IMAGE_SIZE, cpu), teacher=network_info(teacher, "kit-teacher", IMAGE_SIZE, cpu),
        split_sizes={"source": source_size, "target": target_size}, image_size=IMAGE_SIZE,
    )
    return student, teacher, info, source_size, target_size


def kit_method_info(num_classes: int = 4) -> MethodInfo:
    """The ``MethodInfo`` the kit builds components with (two small networks of different shapes)."""
    return _networks(num_classes)[2]


def _check_terms(terms: Any, where: str) -> None:
    assert isinstance(terms, dict), f"{where} must return a dict of named terms"
    for name, value in terms.items():
        assert isinstance(value, torch.Tensor) and value.dim() == 0, f"{where}: term {name!r} must be a scalar tensor"
        assert math.isfinite(float(value.detach())), f"{where}: term {name!r} is not finite ({float(value.detach())})"


def _one_loss_step(method: type[Method], hparams: Any, num_classes: int, batch: int) -> tuple[dict[str, torch.Tensor], Method, TinyNet]:
    """Build the component and compute one step's terms (loss-based components)."""
    student, teacher, info, source_size, target_size = _networks(num_classes)
    component = method(hparams, info)
    labels = torch.arange(batch) % num_classes
    source = Batch(torch.randn(batch, 3, IMAGE_SIZE, IMAGE_SIZE), labels, torch.arange(batch) % source_size)
    target = Batch(torch.randn(batch, 3, IMAGE_SIZE, IMAGE_SIZE), labels if method.uses_target_labels else None,
                   (torch.arange(batch) * 3) % target_size)
    step = make_step(student, teacher if method.needs_teacher else None, source, target, 0.5, component.intermediates,
                     _kit_views(method))
    terms = component.loss(step)
    _check_terms(terms, f"{method.name}.loss()")
    if terms:
        (F.cross_entropy(step.student("source").logits, labels) + torch.stack(list(terms.values())).sum()).backward()
    return terms, component, student


def check_method(method: type[Method], num_classes: int = 4, batch: int = 6) -> dict[str, torch.Tensor]:
    """Check a component against contract v2; returns the loss terms of one step at default hparams.

    Checks: declared attributes and search spaces; loss terms are finite scalars; gradients
    reach the student and the component's own parameters and never the teacher; every
    extreme of every search space still gives finite terms; hparams pickle; two training
    steps through the engine's loop (intermediates, indices, views, owned step, parameter
    groups) leave the teacher unchanged; ``before_evaluation`` changes only the copy it gets.
    """
    assert isinstance(method.name, str) and method.name.isidentifier(), "name must be an identifier"
    assert isinstance(method.version, int) and method.version >= 1, "version must be an int >= 1"
    assert method.family in FAMILIES, f"family must be one of {FAMILIES}"
    check_search_space(method)
    defaults = method.Hparams()
    assert pickle.loads(pickle.dumps(defaults)) == defaults, f"{method.name}.Hparams must pickle (jobs are sent to other processes)"
    torch.manual_seed(0)
    terms: dict[str, torch.Tensor] = {}
    if not method.owns_step:
        terms, component, student = _one_loss_step(method, defaults, num_classes, batch)
        if terms:
            assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters()), "no gradient reaches the student"
            own = [p for p in component.parameters() if p.requires_grad]
            assert not own or any(p.grad is not None for p in own), f"{method.name}: none of its own parameters receives a gradient"
        for field_name, value in search_extremes(method):
            try:
                hparams = dataclasses.replace(defaults, **{field_name: value})
            except (ValueError, TypeError) as exc:
                raise AssertionError(f"{method.name}.{field_name}={value!r} is in the search space but rejected: {exc}") from None
            _one_loss_step(method, hparams, num_classes, batch)
    _check_training(method, defaults, num_classes)
    return terms


def _check_training(method: type[Method], hparams: Any, num_classes: int) -> None:
    """Two steps of the engine's own loop, then the evaluation hook on a copy."""
    student, teacher, info, source_size, target_size = _networks(num_classes)
    component = method(hparams, info)
    teacher_before = copy.deepcopy(teacher.state_dict())
    source = Split(torch.randn(source_size, 3, IMAGE_SIZE, IMAGE_SIZE), torch.arange(source_size) % num_classes)
    target = Split(torch.randn(target_size, 3, IMAGE_SIZE, IMAGE_SIZE), torch.arange(target_size) % num_classes)
    fit(student, [component], source, target if method.uses_target else None, steps=2, batch_size=8, lr=1e-3,
        weight_decay=0.0, seed=0, teacher=teacher if method.needs_teacher else None,
        reveal_target_labels=method.uses_target_labels, views=_kit_views(method))
    assert all(p.grad is None for p in teacher.parameters()), f"{method.name}: a gradient reached the teacher"
    for name, value in teacher.state_dict().items():
        assert torch.equal(value, teacher_before[name]), f"{method.name} changed the teacher's {name}"
    original = copy.deepcopy(student.state_dict())
    evaluated = copy.deepcopy(student)
    component.before_evaluation(evaluated, target.x)
    for name, value in student.state_dict().items():
        assert torch.equal(value, original[name]), f"{method.name}.before_evaluation changed the training student's {name}"
