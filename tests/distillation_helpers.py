"""Shared pieces of the distillation-loss tests: real student/teacher pairs, batches, one training
step, the gradient check, and the hyperparameter checks written the same way for every component.

Only the setup and the checks that every component shares live here; each test file keeps its own
NumPy reference of the formula, independent of the code under test.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import pytest
import timm
import torch
from torch import nn

from cdkd_bench import Batch, MethodInfo, Outputs, Step
from cdkd_bench.networks import network_info
from cdkd_bench.testing import make_step
from cdkd_plugins.architectures import small_resnets  # noqa: F401 - registers the small ResNets with timm

STUDENT = "resnet10_w8_32px"
TEACHER = "resnet18_w16_32px"
VIT_STUDENT = "vit_tiny_patch16_224"  # timm's stock ViT, built for 32x32 images in 4x4 patches (8x8 tokens, width 192)
NUM_CLASSES = 10
IMAGE_SIZE = 32
BATCH = 6


def _create(arch: str) -> nn.Module:
    """A timm model for 32x32 images with NUM_CLASSES classes (timm's 224-pixel ViTs get 4x4 patches)."""
    if arch.endswith("_224"):
        return timm.create_model(arch, img_size=IMAGE_SIZE, patch_size=4, num_classes=NUM_CLASSES)
    return timm.create_model(arch, num_classes=NUM_CLASSES)


def fixed_step(
    student: Outputs | torch.Tensor, teacher: Outputs | torch.Tensor, *, labels: Iterable[int] | None = None, progress: float = 0.5,
    target_student: Outputs | torch.Tensor | None = None, target_teacher: Outputs | torch.Tensor | None = None,
) -> Step:
    """A step whose networks return fixed outputs whatever the images, so that only a component's arithmetic is tested.

    ``student`` / ``teacher``: each network's outputs on the source batch, as ``Outputs`` or as one tensor that is
    both the logits and the features; ``target_student`` / ``target_teacher``: the same on the target batch
    (default: the source's). The source batch is labelled with ``labels`` (default: class 0 throughout), the
    target batch unlabelled; both hold as many (blank) images as the student's source logits have rows.
    """

    def outputs(value: Outputs | torch.Tensor) -> Outputs:
        return value if isinstance(value, Outputs) else Outputs(value, value)

    source_student, source_teacher = outputs(student), outputs(teacher)
    target_s = source_student if target_student is None else outputs(target_student)
    target_t = source_teacher if target_teacher is None else outputs(target_teacher)
    n = len(source_student.logits)
    source_x, target_x = torch.zeros(n, 3, 4, 4), torch.ones(n, 3, 4, 4)
    y = torch.zeros(n, dtype=torch.long) if labels is None else torch.tensor(list(labels))
    return Step(Batch(source_x, y), Batch(target_x, None), progress,
                lambda x: source_student if x is source_x else target_s,
                lambda domain, _view, _batch: source_teacher if domain == "source" else target_t)


def real_pair(
    student_arch: str = STUDENT, teacher_arch: str = TEACHER, *, seed: int = 0, split_sizes: Mapping[str, int] | None = None,
) -> tuple[nn.Module, nn.Module, MethodInfo]:
    """A freshly initialised (student, teacher, info), seeded with ``seed``.

    The teacher is in eval mode, as the engine runs it, but its parameters stay trainable
    (``requires_grad``), so that a gradient leaking into it would show. ``info`` describes both
    networks as the engine does; ``split_sizes`` defaults to BATCH images per domain.
    """
    torch.manual_seed(seed)
    student = _create(student_arch)
    teacher = _create(teacher_arch).eval()
    cpu = torch.device("cpu")
    s = network_info(student, student_arch, IMAGE_SIZE, cpu)
    t = network_info(teacher, teacher_arch, IMAGE_SIZE, cpu)
    info = MethodInfo(
        num_classes=NUM_CLASSES, student_features=s.num_features, teacher_features=t.num_features, total_steps=100,
        student=s, teacher=t, split_sizes=dict(split_sizes or {"source": BATCH, "target": BATCH}), image_size=IMAGE_SIZE,
    )
    return student, teacher, info


def batches(
    n: int = BATCH, *, seed: int = 0, source_index: Iterable[int] | None = None, target_index: Iterable[int] | None = None,
) -> tuple[Batch, Batch]:
    """(source, target) batches of random 32x32 images from a generator seeded with ``seed``.

    The source is labelled (``i % NUM_CLASSES``), the target unlabelled; both carry split indices,
    ``0..n-1`` unless given (a given index list sets that batch's size).
    """
    g = torch.Generator().manual_seed(seed)
    s_index = torch.arange(n) if source_index is None else torch.tensor(list(source_index))
    t_index = torch.arange(n) if target_index is None else torch.tensor(list(target_index))
    source = Batch(torch.randn(len(s_index), 3, IMAGE_SIZE, IMAGE_SIZE, generator=g), torch.arange(len(s_index)) % NUM_CLASSES, s_index)
    target = Batch(torch.randn(len(t_index), 3, IMAGE_SIZE, IMAGE_SIZE, generator=g), None, t_index)
    return source, target


def one_step_terms(
    component_cls: Any, hparams: Any = None, student_arch: str = STUDENT, teacher_arch: str = TEACHER,
) -> tuple[dict[str, torch.Tensor], nn.Module, nn.Module]:
    """(terms, student, teacher): the component's loss terms on one step of a real pair (``real_pair``)
    over ``batches()``, computing the intermediate maps the component asks for.
    ``hparams`` defaults to the component's default ``Hparams()``."""
    student, teacher, info = real_pair(student_arch, teacher_arch)
    component = component_cls(component_cls.Hparams() if hparams is None else hparams, info)
    terms = component.loss(make_step(student, teacher, *batches(), stages=component.intermediates))
    return terms, student, teacher


def assert_only_the_student_learns(
    terms: Mapping[str, torch.Tensor], student: nn.Module, teacher: nn.Module, extra_modules: Iterable[nn.Module] = (),
) -> torch.Tensor:
    """Backpropagate the summed ``terms`` and check where the gradient went; returns the total.

    Checks: every term is a finite, positive scalar; some student parameter gets a nonzero gradient
    and every student gradient is finite; every parameter of each ``extra_modules`` (a component's
    own heads) gets a nonzero gradient; no parameter of the teacher gets a gradient, although all
    of them require one (so the last check means something).
    """
    assert terms, "the component returned no loss terms"
    for name, value in terms.items():
        assert value.dim() == 0 and math.isfinite(value.item()) and value.item() > 0, f"{name} = {value}: not a finite positive scalar"
    teacher_parameters = list(teacher.parameters())
    assert all(p.requires_grad for p in teacher_parameters), "a frozen teacher parameter would make the no-gradient check vacuous"
    total = sum(terms.values())
    assert isinstance(total, torch.Tensor) and torch.isfinite(total) and total.item() > 0, f"total {total}"
    total.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters()), "no gradient reached the student"
    assert all(torch.isfinite(p.grad).all() for p in student.parameters() if p.grad is not None), "a student gradient is not finite"
    for module in extra_modules:
        for name, p in module.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reached {type(module).__name__}.{name}"
    assert all(p.grad is None for p in teacher_parameters), "a gradient reached the teacher"
    return total


def student_only_step(component_cls: Any, hparams: Any = None, student_arch: str = STUDENT) -> dict[str, torch.Tensor]:
    """``one_step_terms`` checked by ``assert_only_the_student_learns``; returns the terms."""
    terms, student, teacher = one_step_terms(component_cls, hparams, student_arch)
    assert_only_the_student_learns(terms, student, teacher)
    return terms


def assert_rejects_hparams(component_cls: Any, bad: Mapping[str, Any]) -> None:
    """The component's ``Hparams(**bad)`` raises ValueError."""
    with pytest.raises(ValueError):
        component_cls.Hparams(**bad)


def hparam_defaults(component_cls: Any, *names: str) -> tuple[Any, ...]:
    """The default values of the named hyperparameters of ``component_cls.Hparams()``, in order."""
    hp = component_cls.Hparams()
    return tuple(getattr(hp, name) for name in names)


def search_spaces(component_cls: Any) -> dict[str, Any]:
    """Each hyperparameter's declared search space (the field's ``metadata["search"]``), by name."""
    return {name: f.metadata["search"] for name, f in component_cls.Hparams.__dataclass_fields__.items()}
