"""The NKD loss against Yang et al.'s formula, computed independently with NumPy loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from distillation_helpers import assert_rejects_hparams, fixed_step, hparam_defaults, student_only_step

from cdkd_bench import MethodInfo
from cdkd_bench.testing import check_method
from cdkd_plugins.methods.nkd import NKD, nkd_loss, nkd_terms

STUDENT = [[2.0, 0.5, -1.0, 0.3], [0.1, 0.2, 0.3, -0.4], [-1.0, 1.5, 0.0, 2.5]]
TEACHER = [[1.5, 1.0, -0.5, 0.0], [-1.0, 0.0, 2.0, 0.5], [0.5, 3.0, -2.0, 1.0]]
LABELS = [1, 2, 0]  # not always the teacher's argmax (1, 2, 1)


def softmax_row(z: list[float], temperature: float = 1.0) -> list[float]:
    exps = [math.exp(v / temperature) for v in z]
    return [e / sum(exps) for e in exps]


def numpy_nkd(student, teacher, labels, gamma: float, temperature: float) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(mean of -T_t log S_t, mean of -gamma lambda^2 sum_{i != t} N(T_i^lambda) log N(S_i^lambda)).

    N(.) renormalises the softened probabilities over the non-target classes: p_i / sum_{j != t} p_j.
    """
    target_parts, non_target_parts = [], []
    for s, t, y in zip(student, teacher, labels, strict=True):
        ps, pt = softmax_row(s), softmax_row(t)
        target_parts.append(-pt[y] * math.log(ps[y]))
        ps_l, pt_l = softmax_row(s, temperature), softmax_row(t, temperature)
        rest_s = sum(p for i, p in enumerate(ps_l) if i != y)
        rest_t = sum(p for i, p in enumerate(pt_l) if i != y)
        cross = sum((pt_l[i] / rest_t) * math.log(ps_l[i] / rest_s) for i in range(len(s)) if i != y)
        non_target_parts.append(-gamma * temperature**2 * cross)
    return float(np.mean(target_parts)), float(np.mean(non_target_parts))


def _t(rows) -> torch.Tensor:  # type: ignore[no-untyped-def]
    return torch.tensor(rows, dtype=torch.float64)


@pytest.mark.parametrize(("gamma", "temperature"), [(1.5, 1.0), (1.0, 4.0), (0.5, 2.0)])
def test_nkd_matches_the_formula(gamma: float, temperature: float) -> None:
    target_term, non_target_term = nkd_terms(_t(STUDENT), _t(TEACHER), torch.tensor(LABELS), gamma, temperature)
    expected_target, expected_non_target = numpy_nkd(STUDENT, TEACHER, LABELS, gamma, temperature)
    assert target_term.item() == pytest.approx(expected_target, rel=1e-10)
    assert non_target_term.item() == pytest.approx(expected_non_target, rel=1e-10)
    total = nkd_loss(_t(STUDENT), _t(TEACHER), torch.tensor(LABELS), gamma, temperature).item()
    assert total == pytest.approx(expected_target + expected_non_target, rel=1e-10)


def test_nkd_known_value() -> None:
    # Three classes, target 0, T = 1. Teacher logits (0, ln 2, 0): T = (1/4, 1/2, 1/4), so T_t = 1/4 and
    # N(T) over classes 1, 2 = (2/3, 1/3). Student logits all 0: S = (1/3, 1/3, 1/3), N(S) = (1/2, 1/2).
    # L = -1/4 ln(1/3) - gamma * (2/3 ln(1/2) + 1/3 ln(1/2)) = 1/4 ln 3 + gamma ln 2.
    student, teacher = torch.zeros(1, 3), torch.tensor([[0.0, math.log(2.0), 0.0]])
    got = nkd_loss(student, teacher, torch.tensor([0]), gamma=1.5, temperature=1.0).item()
    assert got == pytest.approx(0.25 * math.log(3.0) + 1.5 * math.log(2.0), rel=1e-6)


def test_non_target_part_is_kl_plus_the_teachers_entropy() -> None:
    """The cross-entropy form differs from the KL form only by the teacher's normalised non-target entropy."""
    gamma, temperature = 1.5, 2.0
    _, non_target = nkd_terms(_t(STUDENT), _t(TEACHER), torch.tensor(LABELS), gamma, temperature)
    kl_parts, entropy_parts = [], []
    for s, t, y in zip(STUDENT, TEACHER, LABELS, strict=True):
        ps = [p for i, p in enumerate(softmax_row(s, temperature)) if i != y]
        pt = [p for i, p in enumerate(softmax_row(t, temperature)) if i != y]
        ps, pt = [p / sum(ps) for p in ps], [p / sum(pt) for p in pt]
        kl_parts.append(sum(a * math.log(a / b) for a, b in zip(pt, ps, strict=True)))
        entropy_parts.append(-sum(a * math.log(a) for a in pt))
    expected = gamma * temperature**2 * (np.mean(kl_parts) + np.mean(entropy_parts))
    assert non_target.item() == pytest.approx(expected, rel=1e-10)


def test_student_matching_teacher_is_the_minimum_of_the_non_target_part() -> None:
    """With the student equal to the teacher the non-target part is the teacher's entropy (its minimum)."""
    labels = torch.tensor(LABELS)
    at_teacher = nkd_terms(_t(TEACHER), _t(TEACHER), labels, 1.5, 1.0)[1].item()
    elsewhere = nkd_terms(_t(STUDENT), _t(TEACHER), labels, 1.5, 1.0)[1].item()
    assert at_teacher < elsewhere
    student = _t(TEACHER).requires_grad_(True)
    nkd_terms(student, _t(TEACHER), labels, 1.5, 1.0)[1].backward()
    assert student.grad.abs().max().item() < 1e-12


def test_the_target_part_ignores_non_target_temperature_and_gamma() -> None:
    labels = torch.tensor(LABELS)
    first = nkd_terms(_t(STUDENT), _t(TEACHER), labels, 1.5, 1.0)[0].item()
    second = nkd_terms(_t(STUDENT), _t(TEACHER), labels, 0.3, 4.0)[0].item()
    assert first == pytest.approx(second, rel=1e-12)


def test_nkd_component_uses_labels_on_source_and_teacher_argmax_on_target() -> None:
    student = torch.tensor(STUDENT, requires_grad=True)
    rev_s, rev_t = list(reversed(STUDENT)), list(reversed(TEACHER))
    step = fixed_step(student, torch.tensor(TEACHER), labels=LABELS, target_student=torch.tensor(rev_s), target_teacher=torch.tensor(rev_t))
    info = MethodInfo(num_classes=4, student_features=4, teacher_features=4, total_steps=10)
    terms = NKD(NKD.Hparams(weight=0.5, gamma=2.0, temperature=3.0), info).loss(step)
    assert set(terms) == {"target_source", "nontarget_source", "target_target", "nontarget_target"}
    source_expected = numpy_nkd(STUDENT, TEACHER, LABELS, 2.0, 3.0)
    pseudo = [int(np.argmax(row)) for row in rev_t]
    target_expected = numpy_nkd(rev_s, rev_t, pseudo, 2.0, 3.0)
    assert terms["target_source"].item() == pytest.approx(0.5 * source_expected[0], rel=1e-5)
    assert terms["nontarget_source"].item() == pytest.approx(0.5 * source_expected[1], rel=1e-5)
    assert terms["target_target"].item() == pytest.approx(0.5 * target_expected[0], rel=1e-5)
    assert terms["nontarget_target"].item() == pytest.approx(0.5 * target_expected[1], rel=1e-5)
    sum(terms.values()).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert set(NKD(NKD.Hparams(domains="target"), info).loss(step)) == {"target_target", "nontarget_target"}


def test_gradients_reach_the_student_and_never_the_teacher() -> None:
    assert set(student_only_step(NKD)) == {"target_source", "nontarget_source", "target_target", "nontarget_target"}


def test_nkd_conforms_to_the_kit() -> None:
    assert set(check_method(NKD)) == {"target_source", "nontarget_source", "target_target", "nontarget_target"}


def test_nkd_defaults_are_the_papers() -> None:
    assert hparam_defaults(NKD, "weight", "gamma", "temperature", "domains") == (1.0, 1.5, 1.0, "both")


@pytest.mark.parametrize("bad", [{"weight": -1.0}, {"gamma": -0.5}, {"temperature": 0.0}, {"domains": "all"}])
def test_nkd_rejects_invalid_hparams(bad: dict) -> None:
    assert_rejects_hparams(NKD, bad)


def test_nkd_needs_two_classes() -> None:
    with pytest.raises(ValueError):
        NKD(NKD.Hparams(), MethodInfo(num_classes=1, student_features=4, teacher_features=4, total_steps=1))
