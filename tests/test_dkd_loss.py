"""DKD against Zhao et al.'s formulas, computed independently with NumPy loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from distillation_helpers import assert_rejects_hparams, fixed_step, hparam_defaults, student_only_step

from cdkd_bench import MethodInfo
from cdkd_bench.testing import check_method
from cdkd_plugins.methods.dkd import DKD, dkd_loss, nckd, tckd, warmup_factor

STUDENT = [[2.0, 0.5, -1.0, 0.3], [0.1, 0.2, 0.3, -0.4], [-1.0, 1.5, 0.0, 2.5]]
TEACHER = [[1.5, 1.0, -0.5, 0.0], [-1.0, 0.0, 2.0, 0.5], [0.5, 3.0, -2.0, 1.0]]
LABELS = [1, 2, 0]  # deliberately not always the teacher's argmax (1, 2, 1)


def softmax_row(z: list[float], temperature: float) -> list[float]:
    exps = [math.exp(v / temperature) for v in z]
    total = sum(exps)
    return [e / total for e in exps]


def kl(p: list[float], q: list[float]) -> float:
    return sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q, strict=True) if pi > 0)


def numpy_kd_row(s: list[float], t: list[float], temperature: float) -> float:
    """T^2 KL(p^T || p^S) of one example."""
    return kl(softmax_row(t, temperature), softmax_row(s, temperature)) * temperature**2


def numpy_tckd_row(s: list[float], t: list[float], label: int, temperature: float) -> float:
    """T^2 KL(b^T || b^S), b = (p_t, 1 - p_t) from the full softmax."""
    ps, pt = softmax_row(s, temperature), softmax_row(t, temperature)
    return kl([pt[label], 1 - pt[label]], [ps[label], 1 - ps[label]]) * temperature**2


def numpy_nckd_row(s: list[float], t: list[float], label: int, temperature: float) -> float:
    """T^2 KL(p_hat^T || p_hat^S), p_hat_i = p_i / (1 - p_t) over i != t."""
    ps, pt = softmax_row(s, temperature), softmax_row(t, temperature)
    hat_s = [p / (1 - ps[label]) for i, p in enumerate(ps) if i != label]
    hat_t = [p / (1 - pt[label]) for i, p in enumerate(pt) if i != label]
    return kl(hat_t, hat_s) * temperature**2


def numpy_mean(fn, student, teacher, labels, temperature) -> float:  # type: ignore[no-untyped-def]
    return float(np.mean([fn(s, t, y, temperature) for s, t, y in zip(student, teacher, labels, strict=True)]))


def _t(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


@pytest.mark.parametrize("temperature", [1.0, 4.0, 0.5])
def test_tckd_and_nckd_match_the_formula(temperature: float) -> None:
    labels = torch.tensor(LABELS)
    got_t = tckd(_t(STUDENT), _t(TEACHER), labels, temperature).item()
    got_n = nckd(_t(STUDENT), _t(TEACHER), labels, temperature).item()
    assert got_t == pytest.approx(numpy_mean(numpy_tckd_row, STUDENT, TEACHER, LABELS, temperature), rel=1e-10)
    assert got_n == pytest.approx(numpy_mean(numpy_nckd_row, STUDENT, TEACHER, LABELS, temperature), rel=1e-10)


def test_tckd_known_value() -> None:
    # Two classes, T = 1, target 0: b^T = (1/4, 3/4), b^S = (1/2, 1/2); KL = 1/4 ln(1/2) + 3/4 ln(3/2).
    # With two classes the non-target distribution is a single certain class: NCKD = 0.
    student, teacher, label = torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, math.log(3.0)]]), torch.tensor([0])
    assert tckd(student, teacher, label, 1.0).item() == pytest.approx(0.25 * math.log(0.5) + 0.75 * math.log(1.5), rel=1e-6)
    assert nckd(student, teacher, label, 1.0).item() == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kd_decomposes_into_tckd_plus_weighted_nckd(temperature: float) -> None:
    """The paper's reformulation: KD = TCKD + (1 - p_t^T) NCKD, per example, against a NumPy KD."""
    for s, t, y in zip(STUDENT, TEACHER, LABELS, strict=True):
        one = torch.tensor([y])
        pt_target = softmax_row(t, temperature)[y]
        decomposed = tckd(_t([s]), _t([t]), one, temperature).item() + (1 - pt_target) * nckd(_t([s]), _t([t]), one, temperature).item()
        assert decomposed == pytest.approx(numpy_kd_row(s, t, temperature), rel=1e-10)


def test_dkd_weights_the_two_parts() -> None:
    labels = torch.tensor(LABELS)
    got = dkd_loss(_t(STUDENT), _t(TEACHER), labels, alpha=0.5, beta=8.0, temperature=4.0).item()
    expected = 0.5 * numpy_mean(numpy_tckd_row, STUDENT, TEACHER, LABELS, 4.0) + 8.0 * numpy_mean(numpy_nckd_row, STUDENT, TEACHER, LABELS, 4.0)
    assert got == pytest.approx(expected, rel=1e-10)


def test_dkd_is_zero_when_student_matches_teacher() -> None:
    labels = torch.tensor(LABELS)
    assert dkd_loss(_t(TEACHER), _t(TEACHER), labels, 1.0, 8.0, 4.0).item() == pytest.approx(0.0, abs=1e-12)


def test_tckd_ignores_how_the_non_target_mass_is_spread() -> None:
    """TCKD sees only (p_t, 1 - p_t): permuting the student's non-target logits leaves it unchanged, not NCKD."""
    labels = torch.tensor([0])
    student, permuted, teacher = _t([[1.0, 2.0, -1.0, 0.5]]), _t([[1.0, 0.5, 2.0, -1.0]]), _t([[0.5, 1.5, -0.5, 0.0]])
    assert tckd(permuted, teacher, labels, 2.0).item() == pytest.approx(tckd(student, teacher, labels, 2.0).item(), rel=1e-12)
    assert nckd(permuted, teacher, labels, 2.0).item() != pytest.approx(nckd(student, teacher, labels, 2.0).item(), rel=1e-3)


def test_dkd_stays_finite_for_a_certain_teacher() -> None:
    """A teacher with p_t = 1 in floating point (the reference's log of a sum would give log 0)."""
    student = torch.tensor([[0.0, 1.0, -1.0]], requires_grad=True)
    teacher = torch.tensor([[200.0, 0.0, -50.0]])
    value = dkd_loss(student, teacher, torch.tensor([0]), 1.0, 8.0, 1.0)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(student.grad).all()


def test_dkd_component_uses_labels_on_source_and_teacher_argmax_on_target() -> None:
    student = _t(STUDENT).float().requires_grad_(True)
    target_student = _t(list(reversed(STUDENT))).float()
    teacher, target_teacher = _t(TEACHER).float(), _t(list(reversed(TEACHER))).float()
    step = fixed_step(student, teacher, labels=LABELS, target_student=target_student, target_teacher=target_teacher)
    info = MethodInfo(num_classes=4, student_features=4, teacher_features=4, total_steps=10)
    hp = DKD.Hparams(weight=0.5, alpha=2.0, beta=3.0, temperature=2.0, warmup=0.0)
    terms = DKD(hp, info).loss(step)
    assert set(terms) == {"tckd_source", "nckd_source", "tckd_target", "nckd_target"}
    pseudo = [int(np.argmax(row)) for row in reversed(TEACHER)]
    rev_s, rev_t = list(reversed(STUDENT)), list(reversed(TEACHER))
    assert terms["tckd_source"].item() == pytest.approx(0.5 * 2.0 * numpy_mean(numpy_tckd_row, STUDENT, TEACHER, LABELS, 2.0), rel=1e-5)
    assert terms["nckd_source"].item() == pytest.approx(0.5 * 3.0 * numpy_mean(numpy_nckd_row, STUDENT, TEACHER, LABELS, 2.0), rel=1e-5)
    assert terms["tckd_target"].item() == pytest.approx(0.5 * 2.0 * numpy_mean(numpy_tckd_row, rev_s, rev_t, pseudo, 2.0), rel=1e-5)
    assert terms["nckd_target"].item() == pytest.approx(0.5 * 3.0 * numpy_mean(numpy_nckd_row, rev_s, rev_t, pseudo, 2.0), rel=1e-5)
    sum(terms.values()).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    only_source = DKD(DKD.Hparams(domains="source"), info).loss(step)
    assert set(only_source) == {"tckd_source", "nckd_source"}


@pytest.mark.parametrize(
    ("progress", "warmup", "factor"), [(0.0, 0.1, 0.0), (0.05, 0.1, 0.5), (0.1, 0.1, 1.0), (0.9, 0.1, 1.0), (0.0, 0.0, 1.0)]
)
def test_warmup_ramps_the_loss_linearly(progress: float, warmup: float, factor: float) -> None:
    assert warmup_factor(progress, warmup) == pytest.approx(factor)
    step = fixed_step(_t(STUDENT).float(), _t(TEACHER).float(), labels=LABELS, progress=progress)
    info = MethodInfo(num_classes=4, student_features=4, teacher_features=4, total_steps=10)
    terms = DKD(DKD.Hparams(warmup=warmup, domains="source"), info).loss(step)
    full = numpy_mean(numpy_tckd_row, STUDENT, TEACHER, LABELS, 4.0) + 8.0 * numpy_mean(numpy_nckd_row, STUDENT, TEACHER, LABELS, 4.0)
    assert (terms["tckd_source"] + terms["nckd_source"]).item() == pytest.approx(factor * full, rel=1e-5, abs=1e-9)


def test_gradients_reach_the_student_and_never_the_teacher() -> None:
    assert set(student_only_step(DKD)) == {"tckd_source", "nckd_source", "tckd_target", "nckd_target"}


def test_dkd_conforms_to_the_kit() -> None:
    terms = check_method(DKD)
    assert set(terms) == {"tckd_source", "nckd_source", "tckd_target", "nckd_target"}


def test_dkd_defaults_are_the_papers() -> None:
    assert hparam_defaults(DKD, "alpha", "beta", "temperature", "domains") == (1.0, 8.0, 4.0, "both")
    assert DKD.Hparams().warmup == pytest.approx(20 / 240)


@pytest.mark.parametrize(
    "bad", [{"weight": -1.0}, {"alpha": -0.1}, {"beta": -1.0}, {"temperature": 0.0}, {"warmup": -0.1}, {"warmup": 1.0}, {"domains": "all"}]
)
def test_dkd_rejects_invalid_hparams(bad: dict) -> None:
    assert_rejects_hparams(DKD, bad)


def test_dkd_needs_two_classes() -> None:
    with pytest.raises(ValueError):
        DKD(DKD.Hparams(), MethodInfo(num_classes=1, student_features=4, teacher_features=4, total_steps=1))
