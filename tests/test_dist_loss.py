"""DIST against Huang et al.'s formulas, computed independently with NumPy loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from distillation_helpers import assert_rejects_hparams, fixed_step, hparam_defaults, student_only_step

from cdkd_bench import MethodInfo
from cdkd_bench.testing import check_method
from cdkd_plugins.methods.dist import DIST, dist_loss, dist_terms, inter_class_relation, intra_class_relation

STUDENT = [[2.0, 0.5, -1.0, 0.3], [0.1, 0.2, 0.3, -0.4], [-1.0, 1.5, 0.0, 2.5]]
TEACHER = [[1.5, 1.0, -0.5, 0.0], [-1.0, 0.0, 2.0, 0.5], [0.5, 3.0, -2.0, 1.0]]


def softmax_rows(z: list[list[float]], temperature: float) -> list[list[float]]:
    out = []
    for row in z:
        exps = [math.exp(v / temperature) for v in row]
        out.append([e / sum(exps) for e in exps])
    return out


EPS = 1e-8  # the documented guard of the denominator (as in the authors' code)


def pearson(u: list[float], v: list[float], eps: float = EPS) -> float:
    """sum (u - mean u)(v - mean v) / (|u - mean u| |v - mean v| + eps), written out with loops."""
    mu, mv = sum(u) / len(u), sum(v) / len(v)
    cov = sum((a - mu) * (b - mv) for a, b in zip(u, v, strict=True))
    su = math.sqrt(sum((a - mu) ** 2 for a in u))
    sv = math.sqrt(sum((b - mv) ** 2 for b in v))
    return cov / (su * sv + eps)


def numpy_dist(student, teacher, beta: float, gamma: float, temperature: float) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(tau^2 beta L_inter, tau^2 gamma L_intra)."""
    ys, yt = softmax_rows(student, temperature), softmax_rows(teacher, temperature)
    n, c = len(ys), len(ys[0])
    inter = 1 - sum(pearson(ys[i], yt[i]) for i in range(n)) / n
    intra = 1 - sum(pearson([ys[i][j] for i in range(n)], [yt[i][j] for i in range(n)]) for j in range(c)) / c
    return temperature**2 * beta * inter, temperature**2 * gamma * intra


def _t(rows) -> torch.Tensor:  # type: ignore[no-untyped-def]
    return torch.tensor(rows, dtype=torch.float64)


@pytest.mark.parametrize("temperature", [1.0, 4.0, 0.5])
def test_dist_matches_the_formula(temperature: float) -> None:
    inter, intra = dist_terms(_t(STUDENT), _t(TEACHER), temperature)
    expected_inter, expected_intra = numpy_dist(STUDENT, TEACHER, 1.0, 1.0, temperature)
    assert inter.item() == pytest.approx(expected_inter, rel=1e-6)
    assert intra.item() == pytest.approx(expected_intra, rel=1e-6)
    total = dist_loss(_t(STUDENT), _t(TEACHER), beta=2.0, gamma=0.5, temperature=temperature).item()
    assert total == pytest.approx(sum(numpy_dist(STUDENT, TEACHER, 2.0, 0.5, temperature)), rel=1e-6)


def test_relations_known_values() -> None:
    # Rows: the first pair is reversed, y^T = 0.5 - y^S (rho = -1, d = 2); the second is identical (d = 0).
    ys = _t([[0.1, 0.2, 0.3, 0.4], [0.1, 0.25, 0.25, 0.4]])
    yt = _t([[0.4, 0.3, 0.2, 0.1], [0.1, 0.25, 0.25, 0.4]])
    assert inter_class_relation(ys, yt).item() == pytest.approx((2 + 0) / 2, rel=1e-6)
    # Columns across the batch: classes 0 and 3 are constant for the student (zero spread: rho taken
    # as 0); classes 1 and 2 move in opposite directions (rho = -1). L_intra = 1 - (0 - 1 - 1 + 0) / 4.
    assert intra_class_relation(ys, yt).item() == pytest.approx(1.5, rel=1e-5)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_dist_is_zero_when_student_matches_teacher(temperature: float) -> None:
    inter, intra = dist_terms(_t(TEACHER), _t(TEACHER), temperature)
    # Exactly zero without the denominator guard; with it, tau^2 * eps / |centred y|^2 per vector.
    assert inter.item() == pytest.approx(0.0, abs=1e-4)
    assert intra.item() == pytest.approx(0.0, abs=1e-4)
    expected_inter, expected_intra = numpy_dist(TEACHER, TEACHER, 1.0, 1.0, temperature)
    assert inter.item() == pytest.approx(expected_inter, rel=1e-6)
    assert intra.item() == pytest.approx(expected_intra, rel=1e-6)


def test_inter_class_relation_ignores_a_positive_affine_change_of_each_prediction() -> None:
    """The paper: d(m1 u + n1, m2 v + n2) = d(u, v) for m1 m2 > 0, here per sample (row)."""
    ys, yt = torch.softmax(_t(STUDENT), dim=1), torch.softmax(_t(TEACHER), dim=1)
    scale, shift = _t([[3.0], [0.2], [7.5]]), _t([[-0.4], [1.0], [0.05]])
    assert inter_class_relation(scale * ys + shift, yt).item() == pytest.approx(inter_class_relation(ys, yt).item(), rel=1e-6)
    assert inter_class_relation(ys, 2.0 * yt - 1.0).item() == pytest.approx(inter_class_relation(ys, yt).item(), rel=1e-6)
    # a negative scale reverses the correlation, so the invariance is only for positive ones
    assert inter_class_relation(-ys, yt).item() != pytest.approx(inter_class_relation(ys, yt).item(), rel=1e-3)


def test_intra_class_relation_ignores_a_positive_affine_change_of_each_class_column() -> None:
    ys, yt = torch.softmax(_t(STUDENT), dim=1), torch.softmax(_t(TEACHER), dim=1)
    scale, shift = _t([[2.0, 0.5, 4.0, 1.5]]), _t([[0.3, -0.2, 0.0, 1.0]])
    assert intra_class_relation(scale * ys + shift, yt).item() == pytest.approx(intra_class_relation(ys, yt).item(), rel=1e-6)


def test_dist_unlike_kd_does_not_need_matching_probabilities() -> None:
    """A student whose probabilities are a positive affine image of the teacher's (here mixed with
    the uniform distribution) has a non-zero KD loss but a zero inter-class relation loss."""
    yt = torch.softmax(_t(TEACHER), dim=1)
    ys = 0.5 * yt + 0.5 / 4  # still a distribution over 4 classes, per-row affine in yt
    assert inter_class_relation(ys, yt).item() == pytest.approx(0.0, abs=1e-6)
    kd = float((yt * (yt.log() - ys.log())).sum(dim=1).mean())
    assert kd > 1e-2


def test_dist_component_applies_weights_on_both_domains() -> None:
    student = _t(STUDENT).float().requires_grad_(True)
    step = fixed_step(student, _t(TEACHER).float())
    info = MethodInfo(num_classes=4, student_features=4, teacher_features=4, total_steps=10)
    terms = DIST(DIST.Hparams(weight=0.5, beta=2.0, gamma=3.0, temperature=2.0), info).loss(step)
    assert set(terms) == {"inter_source", "intra_source", "inter_target", "intra_target"}
    expected_inter, expected_intra = numpy_dist(STUDENT, TEACHER, 2.0, 3.0, 2.0)
    for domain in ("source", "target"):
        assert terms[f"inter_{domain}"].item() == pytest.approx(0.5 * expected_inter, rel=1e-5)
        assert terms[f"intra_{domain}"].item() == pytest.approx(0.5 * expected_intra, rel=1e-5)
    sum(terms.values()).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    only_target = DIST(DIST.Hparams(domains="target"), info).loss(step)
    assert set(only_target) == {"inter_target", "intra_target"}


def test_dist_is_finite_for_a_single_example_batch() -> None:
    """Correlation across a batch of one is undefined: the intra term is a constant with zero gradient."""
    student = _t([STUDENT[0]]).requires_grad_(True)
    inter, intra = dist_terms(student, _t([TEACHER[0]]), 1.0)
    (inter + intra).backward()
    assert torch.isfinite(inter) and intra.item() == pytest.approx(1.0)
    assert torch.isfinite(student.grad).all()


def test_gradients_reach_the_student_and_never_the_teacher() -> None:
    assert set(student_only_step(DIST)) == {"inter_source", "intra_source", "inter_target", "intra_target"}


def test_dist_conforms_to_the_kit() -> None:
    terms = check_method(DIST)
    assert set(terms) == {"inter_source", "intra_source", "inter_target", "intra_target"}


def test_dist_defaults() -> None:
    assert hparam_defaults(DIST, "weight", "beta", "gamma", "temperature", "domains") == (1.0, 1.0, 1.0, 1.0, "both")


@pytest.mark.parametrize("bad", [{"weight": -1.0}, {"beta": -0.5}, {"gamma": -0.5}, {"temperature": 0.0}, {"domains": "all"}])
def test_dist_rejects_invalid_hparams(bad: dict) -> None:
    assert_rejects_hparams(DIST, bad)


def test_numpy_reference_agrees_with_numpy_corrcoef() -> None:
    """Sanity check of the test's own Pearson against NumPy's."""
    ys = softmax_rows(STUDENT, 1.0)
    yt = softmax_rows(TEACHER, 1.0)
    assert pearson(ys[0], yt[0], eps=0.0) == pytest.approx(float(np.corrcoef(ys[0], yt[0])[0, 1]), rel=1e-12)
