"""The RKD distance and angle losses against Park et al.'s formulas, computed independently with NumPy loops."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from distillation_helpers import VIT_STUDENT, assert_rejects_hparams, fixed_step, hparam_defaults, student_only_step

from cdkd_bench import MethodInfo
from cdkd_bench.testing import check_method
from cdkd_plugins.methods.rkd import RKD, rkd_angle_loss, rkd_distance_loss

STUDENT = [[1.0, 0.5, -0.2], [0.3, -1.0, 0.8], [-0.5, 0.2, 0.1], [0.9, 0.9, 0.4], [0.0, -0.3, -0.6]]
TEACHER = [
    [0.2, 1.0, 0.0, -0.3, 0.5], [1.2, -0.4, 0.3, 0.0, 0.1], [-0.7, 0.1, 0.9, 0.2, -0.2],
    [0.0, 0.3, -0.5, 1.1, 0.6], [3.0, 2.0, -1.0, 0.5, 0.0],
]


def huber(x: float) -> float:
    return 0.5 * x * x if abs(x) <= 1.0 else abs(x) - 0.5


def numpy_distances(x: list[list[float]]) -> dict[tuple[int, int], float]:
    """psi_D(x_i, x_j) = ||x_i - x_j|| / mu, mu = mean over the ordered pairs i != j."""
    a = np.asarray(x, dtype=np.float64)
    pairs = [(i, j) for i in range(len(a)) for j in range(len(a)) if i != j]
    raw = {(i, j): math.sqrt(float(((a[i] - a[j]) ** 2).sum())) for i, j in pairs}
    mu = sum(raw.values()) / len(raw)
    return {pair: d / mu for pair, d in raw.items()}


def numpy_distance_loss(student: list[list[float]], teacher: list[list[float]]) -> float:
    s, t = numpy_distances(student), numpy_distances(teacher)
    return sum(huber(s[p] - t[p]) for p in s) / len(s)


def numpy_angles(x: list[list[float]]) -> dict[tuple[int, int, int], float]:
    """psi_A(x_i, x_j, x_k) = <e_ij, e_kj>, e_ij = (x_i - x_j) / ||x_i - x_j||, for distinct i, j, k."""
    a = np.asarray(x, dtype=np.float64)
    out = {}
    for i, j, k in itertools.permutations(range(len(a)), 3):
        e_ij = (a[i] - a[j]) / np.linalg.norm(a[i] - a[j])
        e_kj = (a[k] - a[j]) / np.linalg.norm(a[k] - a[j])
        out[i, j, k] = float(e_ij @ e_kj)
    return out


def numpy_angle_loss(student: list[list[float]], teacher: list[list[float]]) -> float:
    s, t = numpy_angles(student), numpy_angles(teacher)
    return sum(huber(s[key] - t[key]) for key in s) / len(s)


def test_distance_loss_matches_the_formula() -> None:
    got = rkd_distance_loss(torch.tensor(STUDENT), torch.tensor(TEACHER))
    assert got.item() == pytest.approx(numpy_distance_loss(STUDENT, TEACHER), rel=1e-5)


def test_angle_loss_matches_the_formula() -> None:
    got = rkd_angle_loss(torch.tensor(STUDENT), torch.tensor(TEACHER))
    assert got.item() == pytest.approx(numpy_angle_loss(STUDENT, TEACHER), rel=1e-5)


def test_the_huber_branch_above_delta_is_exercised() -> None:
    # A teacher point far away makes some normalised-distance differences exceed 1.
    far = [row[:] for row in TEACHER]
    far[4] = [30.0, 20.0, -10.0, 5.0, 0.0]
    s, t = numpy_distances(STUDENT), numpy_distances(far)
    assert any(abs(s[p] - t[p]) > 1.0 for p in s)
    got = rkd_distance_loss(torch.tensor(STUDENT), torch.tensor(far))
    assert got.item() == pytest.approx(numpy_distance_loss(STUDENT, far), rel=1e-5)


def test_known_values_equilateral_teacher_collinear_student() -> None:
    # Teacher: equilateral triangle (normalised distances all 1, every angle 60 degrees: cos 1/2).
    # Student: 0, 1, 2 on a line: distances 1, 2, 1, mu = 4/3, normalised 3/4, 3/2, 3/4.
    # Distance: Huber(-1/4), Huber(1/2), Huber(-1/4) = 1/32, 1/8, 1/32 -> mean 1/16.
    # Angles: cos = 1 at the ends (both triplets), -1 in the middle: Huber(1/2) twice at each end,
    # Huber(-3/2) = 1 twice in the middle -> (4/8 + 2) / 6 = 5/12.
    teacher = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.5, math.sqrt(3.0) / 2]])
    student = torch.tensor([[0.0], [1.0], [2.0]])
    assert rkd_distance_loss(student, teacher).item() == pytest.approx(1 / 16, rel=1e-5)
    assert rkd_angle_loss(student, teacher).item() == pytest.approx(5 / 12, rel=1e-5)


def test_losses_vanish_for_a_scaled_rotated_translated_student_of_another_size() -> None:
    torch.manual_seed(0)
    teacher = torch.tensor(STUDENT)  # 3 features
    basis, _ = torch.linalg.qr(torch.randn(5, 3))  # orthonormal columns: an isometric embedding into 5-d
    student = 2.5 * teacher @ basis.t() + torch.tensor([1.0, -2.0, 0.5, 3.0, 0.0])
    assert rkd_distance_loss(student, teacher).item() == pytest.approx(0.0, abs=1e-6)
    assert rkd_angle_loss(student, teacher).item() == pytest.approx(0.0, abs=1e-6)


def test_student_mu_carries_gradient_and_duplicates_stay_finite() -> None:
    student = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0], [-1.0, 0.5]], requires_grad=True)
    teacher = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    (rkd_distance_loss(student, teacher) + rkd_angle_loss(student, teacher)).backward()
    assert student.grad is not None and torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0


def test_tiny_batches_give_zero_and_keep_the_graph() -> None:
    one = torch.ones(1, 3, requires_grad=True)
    assert rkd_distance_loss(one, torch.ones(1, 4)).item() == 0.0
    two = torch.randn(2, 3, requires_grad=True)
    assert rkd_angle_loss(two, torch.randn(2, 4)).item() == 0.0
    rkd_angle_loss(two, torch.randn(2, 4)).backward()
    assert two.grad is not None


def test_rkd_component_applies_the_weights() -> None:
    student = torch.tensor(STUDENT, requires_grad=True)
    step = fixed_step(student, torch.tensor(TEACHER))
    info = MethodInfo(num_classes=3, student_features=3, teacher_features=5, total_steps=1)
    hp = RKD.Hparams(weight=0.5, distance_weight=25.0, angle_weight=50.0)
    terms = RKD(hp, info).loss(step)
    assert set(terms) == {"rkd_distance_source", "rkd_angle_source", "rkd_distance_target", "rkd_angle_target"}
    for domain in ("source", "target"):
        assert terms[f"rkd_distance_{domain}"].item() == pytest.approx(0.5 * 25 * numpy_distance_loss(STUDENT, TEACHER), rel=1e-5)
        assert terms[f"rkd_angle_{domain}"].item() == pytest.approx(0.5 * 50 * numpy_angle_loss(STUDENT, TEACHER), rel=1e-5)
    sum(terms.values()).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    only_source = RKD(RKD.Hparams(domains="source"), info).loss(step)
    assert set(only_source) == {"rkd_distance_source", "rkd_angle_source"}


def test_paper_defaults() -> None:
    assert hparam_defaults(RKD, "distance_weight", "angle_weight", "domains") == (25.0, 50.0, "both")


def test_gradients_reach_the_student_and_never_the_teacher() -> None:
    assert len(student_only_step(RKD)) == 4


def test_heterogeneous_vit_student_with_resnet_teacher() -> None:
    assert len(student_only_step(RKD, student_arch=VIT_STUDENT)) == 4


def test_rkd_conforms_to_the_kit() -> None:
    assert len(check_method(RKD)) == 4


@pytest.mark.parametrize("bad", [{"weight": -1.0}, {"distance_weight": -0.1}, {"angle_weight": -2.0}, {"domains": "all"}])
def test_rkd_rejects_invalid_hparams(bad: dict) -> None:
    assert_rejects_hparams(RKD, bad)
