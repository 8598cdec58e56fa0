"""Logit-standardised KD against Sun et al.'s Algorithms 1 and 2, computed independently with NumPy loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from distillation_helpers import assert_rejects_hparams, fixed_step, hparam_defaults, student_only_step

from cdkd_bench import MethodInfo
from cdkd_bench.testing import check_method
from cdkd_plugins.methods.lskd import LSKD, lskd_loss, standardize

STUDENT = [[2.0, 0.5, -1.0, 0.3], [0.1, 0.2, 0.3, -0.4], [-1.0, 1.5, 0.0, 2.5]]
TEACHER = [[1.5, 1.0, -0.5, 0.0], [-1.0, 0.0, 2.0, 0.5], [0.5, 3.0, -2.0, 1.0]]


def zscore_row(x: list[float], tau: float, eps: float = 1e-7) -> list[float]:
    """Algorithm 1: (x - mean) / std / tau with the population std (1/K), eps added to std."""
    k = len(x)
    mean = sum(x) / k
    std = math.sqrt(sum((v - mean) ** 2 for v in x) / k)
    return [(v - mean) / (std + eps) / tau for v in x]


def numpy_lskd(student: list[list[float]], teacher: list[list[float]], tau: float) -> float:
    """tau^2 * mean over the batch of KL(softmax(Z(v)) || softmax(Z(z)))."""
    total = 0.0
    for s, t in zip(student, teacher, strict=True):
        zs, zt = zscore_row(s, tau), zscore_row(t, tau)
        ns, nt = sum(math.exp(v) for v in zs), sum(math.exp(v) for v in zt)
        ps, pt = [math.exp(v) / ns for v in zs], [math.exp(v) / nt for v in zt]
        total += sum(p * (math.log(p) - math.log(q)) for p, q in zip(pt, ps, strict=True))
    return total / len(student) * tau**2


def _t(rows) -> torch.Tensor:  # type: ignore[no-untyped-def]
    return torch.tensor(rows, dtype=torch.float64)


def test_standardize_matches_algorithm_1() -> None:
    got = standardize(_t(STUDENT), 2.0)
    expected = [zscore_row(row, 2.0) for row in STUDENT]
    np.testing.assert_allclose(got.numpy(), np.asarray(expected), rtol=1e-12, atol=1e-12)
    # zero mean and standard deviation 1 / tau (the paper's properties), population std
    assert got.mean(dim=1).abs().max().item() < 1e-12
    np.testing.assert_allclose(got.std(dim=1, correction=0).numpy(), 0.5, rtol=1e-6)


def test_standardize_uses_the_population_standard_deviation() -> None:
    # [1, -1]: mean 0, population std 1 (the unbiased estimate would be sqrt(2)).
    got = standardize(_t([[1.0, -1.0]]), 1.0)
    assert got[0, 0].item() == pytest.approx(1.0 / (1.0 + 1e-7), rel=1e-12)


@pytest.mark.parametrize("tau", [1.0, 2.0, 4.0])
def test_lskd_matches_the_formula(tau: float) -> None:
    assert lskd_loss(_t(STUDENT), _t(TEACHER), tau).item() == pytest.approx(numpy_lskd(STUDENT, TEACHER, tau), rel=1e-9)


def test_lskd_known_value() -> None:
    # Two logits always standardise to (+1, -1) / tau or (-1, +1) / tau, whatever their values. At tau = 1
    # a student ranking the classes like the teacher has zero loss; one ranking them the other way has
    # KL((1 - p, p) || (p, 1 - p)) with p = softmax((1, -1))[0] = sigmoid(2).
    p = 1 / (1 + math.exp(-2.0))
    expected = p * math.log(p / (1 - p)) + (1 - p) * math.log((1 - p) / p)
    assert lskd_loss(_t([[0.3, 5.0]]), _t([[-2.0, 7.0]]), 1.0).item() == pytest.approx(0.0, abs=1e-12)
    assert lskd_loss(_t([[5.0, 0.3]]), _t([[-2.0, 7.0]]), 1.0).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_lskd_is_invariant_to_shifting_and_scaling_either_logit_vector(tau: float) -> None:
    base = lskd_loss(_t(STUDENT), _t(TEACHER), tau).item()
    shift, scale = _t([[3.0], [-7.0], [0.5]]), _t([[0.25], [4.0], [10.0]])
    assert lskd_loss(_t(STUDENT) + shift, _t(TEACHER), tau).item() == pytest.approx(base, rel=1e-6)
    assert lskd_loss(_t(STUDENT), _t(TEACHER) - shift, tau).item() == pytest.approx(base, rel=1e-6)
    assert lskd_loss(scale * _t(STUDENT), _t(TEACHER), tau).item() == pytest.approx(base, rel=1e-6)
    assert lskd_loss(_t(STUDENT), scale * _t(TEACHER) + shift, tau).item() == pytest.approx(base, rel=1e-6)
    # a negative scale reverses the ranking: not an invariance
    assert lskd_loss(-_t(STUDENT), _t(TEACHER), tau).item() != pytest.approx(base, rel=1e-3)


def test_lskd_is_zero_for_a_student_matching_the_teacher_up_to_affine_change() -> None:
    """Plain KD with a shared temperature penalises a student whose logits are 3x the teacher's; LSKD does not."""
    assert lskd_loss(3.0 * _t(TEACHER) + 1.0, _t(TEACHER), 2.0).item() == pytest.approx(0.0, abs=1e-10)


def test_lskd_constant_logits_are_finite() -> None:
    """A zero-spread logit vector standardises to zeros (uniform) instead of dividing by zero."""
    student = torch.zeros(2, 4, requires_grad=True)
    value = lskd_loss(student, torch.tensor(TEACHER[:2]), 2.0)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(student.grad).all()
    uniform_vs_teacher = numpy_lskd([[0.0] * 4, [0.0] * 4], TEACHER[:2], 2.0)
    assert value.item() == pytest.approx(uniform_vs_teacher, rel=1e-5)


def test_lskd_component_applies_weight_on_both_domains() -> None:
    student = torch.tensor(STUDENT, requires_grad=True)
    step = fixed_step(student, torch.tensor(TEACHER))
    info = MethodInfo(num_classes=4, student_features=4, teacher_features=4, total_steps=10)
    terms = LSKD(LSKD.Hparams(weight=0.5, temperature=3.0), info).loss(step)
    assert set(terms) == {"lskd_source", "lskd_target"}
    for value in terms.values():
        assert value.item() == pytest.approx(0.5 * numpy_lskd(STUDENT, TEACHER, 3.0), rel=1e-5)
    sum(terms.values()).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert list(LSKD(LSKD.Hparams(domains="source"), info).loss(step)) == ["lskd_source"]


def test_gradients_reach_the_student_and_never_the_teacher() -> None:
    assert set(student_only_step(LSKD)) == {"lskd_source", "lskd_target"}


def test_lskd_conforms_to_the_kit() -> None:
    assert set(check_method(LSKD)) == {"lskd_source", "lskd_target"}


def test_lskd_defaults_are_the_papers_cifar_setting() -> None:
    assert hparam_defaults(LSKD, "weight", "temperature", "domains") == (9.0, 2.0, "both")


@pytest.mark.parametrize("bad", [{"weight": -1.0}, {"temperature": 0.0}, {"temperature": -2.0}, {"domains": "all"}])
def test_lskd_rejects_invalid_hparams(bad: dict) -> None:
    assert_rejects_hparams(LSKD, bad)
