"""The PKT loss against Passalis & Tefas's formula, computed independently with NumPy loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from distillation_helpers import VIT_STUDENT, assert_rejects_hparams, fixed_step, student_only_step

from cdkd_bench import MethodInfo
from cdkd_bench.testing import check_method
from cdkd_plugins.methods.pkt import PKT, pkt_loss

STUDENT = [[1.0, 0.5, -0.2], [0.3, -1.0, 0.8], [-0.5, 0.2, 0.1], [0.9, 0.9, 0.4]]
TEACHER = [[0.2, 1.0, 0.0, -0.3, 0.5], [1.2, -0.4, 0.3, 0.0, 0.1], [-0.7, 0.1, 0.9, 0.2, -0.2], [0.0, 0.3, -0.5, 1.1, 0.6]]


def numpy_conditional(x: list[list[float]]) -> list[list[float]]:
    """p_{j|i} = K(x_i, x_j) / sum_{k != i} K(x_i, x_k), K = (cos + 1) / 2; p_{i|i} unused (0)."""
    a = np.asarray(x, dtype=np.float64)
    n = len(a)
    kernel = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(n):
            if i != j:
                cos = float(a[i] @ a[j]) / (math.sqrt(float(a[i] @ a[i])) * math.sqrt(float(a[j] @ a[j])))
                kernel[i][j] = (cos + 1.0) / 2.0
    return [[kernel[i][j] / sum(kernel[i]) for j in range(n)] for i in range(n)]


def numpy_pkt(student: list[list[float]], teacher: list[list[float]]) -> float:
    """sum_i sum_{j != i} p_{j|i} log(p_{j|i} / q_{j|i}), p from the teacher, q from the student."""
    p, q = numpy_conditional(teacher), numpy_conditional(student)
    total = 0.0
    for i in range(len(p)):
        for j in range(len(p)):
            if i != j and p[i][j] > 0:
                total += p[i][j] * math.log(p[i][j] / q[i][j])
    return total


def test_pkt_matches_the_formula_with_different_feature_sizes() -> None:
    got = pkt_loss(torch.tensor(STUDENT), torch.tensor(TEACHER))
    assert got.item() == pytest.approx(numpy_pkt(STUDENT, TEACHER), rel=1e-5)
    assert got.item() > 0


def test_pkt_known_value() -> None:
    # Teacher e1, e2, -e1: kernels K12 = 1/2, K13 = 0, K23 = 1/2, so rows (excluding self) are
    # p_1 = (1, 0), p_2 = (1/2, 1/2), p_3 = (0, 1). Student e1, e2, e1: K12 = 1/2, K13 = 1, K23 = 1/2,
    # q_1 = (1/3, 2/3), q_2 = (1/2, 1/2), q_3 = (2/3, 1/3). KL rows: ln 3, 0, ln 3.
    teacher = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    student = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    assert pkt_loss(student, teacher).item() == pytest.approx(2 * math.log(3.0), rel=1e-5)


def test_pkt_excludes_self_similarity_as_the_paper_does() -> None:
    # With the diagonal kept (the reference code), row 2 of the example above would be
    # (1, 1/2, 1/2) / 2 for both networks and rows 1 and 3 would change: the value would differ.
    teacher = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    student = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    with_diagonal = 0.0
    for p_row, q_row in (([1, 0.5, 0], [1, 0.5, 1]), ([0.5, 1, 0.5], [0.5, 1, 0.5]), ([0, 0.5, 1], [1, 0.5, 1])):
        p = np.asarray(p_row) / sum(p_row)
        q = np.asarray(q_row) / sum(q_row)
        with_diagonal += float(sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True) if pi > 0))
    got = pkt_loss(student, teacher).item()
    assert got == pytest.approx(2 * math.log(3.0), rel=1e-5)
    assert got != pytest.approx(with_diagonal, rel=1e-2)


def test_pkt_is_zero_when_student_matches_teacher() -> None:
    assert pkt_loss(torch.tensor(TEACHER), torch.tensor(TEACHER)).item() == pytest.approx(0.0, abs=1e-6)


def test_pkt_is_invariant_to_scale_and_rotation_of_the_student() -> None:
    torch.manual_seed(0)
    student = torch.tensor(STUDENT)
    rotation, _ = torch.linalg.qr(torch.randn(3, 3))
    scales = torch.tensor([[0.5], [3.0], [1.0], [7.0]])
    base = pkt_loss(student, torch.tensor(TEACHER)).item()
    assert pkt_loss(student @ rotation * scales, torch.tensor(TEACHER)).item() == pytest.approx(base, rel=1e-4)


def test_pkt_is_not_symmetric_so_argument_order_is_checked() -> None:
    forward = pkt_loss(torch.tensor(STUDENT), torch.tensor(TEACHER)).item()
    swapped = numpy_pkt(TEACHER, STUDENT)
    assert forward == pytest.approx(numpy_pkt(STUDENT, TEACHER), rel=1e-5)
    assert forward != pytest.approx(swapped, rel=1e-3)


def test_pkt_component_applies_weight_and_covers_domains() -> None:
    student = torch.tensor(STUDENT, requires_grad=True)
    step = fixed_step(student, torch.tensor(TEACHER))
    info = MethodInfo(num_classes=3, student_features=3, teacher_features=5, total_steps=1)
    terms = PKT(PKT.Hparams(weight=2.5), info).loss(step)
    assert set(terms) == {"pkt_source", "pkt_target"}
    for value in terms.values():
        assert value.item() == pytest.approx(2.5 * numpy_pkt(STUDENT, TEACHER), rel=1e-5)
    sum(terms.values()).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    only_target = PKT(PKT.Hparams(domains="target"), info).loss(step)
    assert list(only_target) == ["pkt_target"]


def test_gradients_reach_the_student_and_never_the_teacher() -> None:
    assert set(student_only_step(PKT)) == {"pkt_source", "pkt_target"}


def test_heterogeneous_vit_student_with_resnet_teacher() -> None:
    assert set(student_only_step(PKT, student_arch=VIT_STUDENT)) == {"pkt_source", "pkt_target"}


def test_pkt_conforms_to_the_kit() -> None:
    terms = check_method(PKT)
    assert set(terms) == {"pkt_source", "pkt_target"}


@pytest.mark.parametrize("bad", [{"weight": -1.0}, {"domains": "all"}])
def test_pkt_rejects_invalid_hparams(bad: dict) -> None:
    assert_rejects_hparams(PKT, bad)
