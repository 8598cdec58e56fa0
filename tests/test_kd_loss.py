"""The KD loss against Hinton et al.'s formula, computed independently with NumPy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cdkd_bench import Batch, MethodInfo, Outputs, Step
from cdkd_plugins.methods.kd import KD, hinton_kd, logit_mse

STUDENT = [[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]]
TEACHER = [[1.5, 1.0, -0.5], [-1.0, 0.0, 2.0]]


def numpy_kd(student: list[list[float]], teacher: list[list[float]], temperature: float) -> float:
    """T^2 * mean over the batch of sum_c p_t,c (log p_t,c - log p_s,c), with p = softmax(z / T)."""
    s = np.asarray(student, dtype=np.float64) / temperature
    t = np.asarray(teacher, dtype=np.float64) / temperature
    log_ps = s - np.log(np.exp(s).sum(axis=1, keepdims=True))
    log_pt = t - np.log(np.exp(t).sum(axis=1, keepdims=True))
    kl_per_example = (np.exp(log_pt) * (log_pt - log_ps)).sum(axis=1)
    return float(kl_per_example.mean() * temperature**2)


@pytest.mark.parametrize("temperature", [1.0, 4.0, 0.5])
def test_hinton_kd_matches_the_formula(temperature: float) -> None:
    got = hinton_kd(torch.tensor(STUDENT), torch.tensor(TEACHER), temperature)
    assert got.item() == pytest.approx(numpy_kd(STUDENT, TEACHER, temperature), rel=1e-5)


def test_hinton_kd_known_value() -> None:
    # Worked by hand for one example, T = 1: p_t = softmax([0, ln 3]) = [1/4, 3/4], p_s = [1/2, 1/2]
    # KL = 1/4 ln(1/2) + 3/4 ln(3/2) = 0.130812...
    got = hinton_kd(torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, float(np.log(3.0))]]), 1.0)
    assert got.item() == pytest.approx(0.25 * np.log(0.5) + 0.75 * np.log(1.5), rel=1e-6)


def test_hinton_kd_is_not_symmetric_so_argument_order_is_checked() -> None:
    forward = hinton_kd(torch.tensor(STUDENT), torch.tensor(TEACHER), 2.0).item()
    swapped = hinton_kd(torch.tensor(TEACHER), torch.tensor(STUDENT), 2.0).item()
    assert forward == pytest.approx(numpy_kd(STUDENT, TEACHER, 2.0), rel=1e-5)
    assert swapped != pytest.approx(forward, rel=1e-3)


def test_hinton_kd_is_zero_when_student_matches_teacher() -> None:
    assert hinton_kd(torch.tensor(TEACHER), torch.tensor(TEACHER), 3.0).item() == pytest.approx(0.0, abs=1e-7)


def test_logit_mse_matches_the_formula() -> None:
    expected = float(np.mean((np.asarray(STUDENT) - np.asarray(TEACHER)) ** 2))
    assert logit_mse(torch.tensor(STUDENT), torch.tensor(TEACHER)).item() == pytest.approx(expected, rel=1e-6)


def _step(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> Step:
    """A step whose 'networks' return fixed logits, so the method's arithmetic is all that is tested."""
    x = torch.zeros(len(student_logits), 3, 4, 4)
    return Step(
        Batch(x, torch.zeros(len(x), dtype=torch.long)),
        Batch(x, None),
        0.0,
        lambda _: Outputs(student_logits, student_logits),
        lambda _role, _view, _batch: Outputs(teacher_logits, teacher_logits),
    )


def test_kd_component_applies_weight_and_covers_both_domains() -> None:
    info = MethodInfo(num_classes=3, student_features=3, teacher_features=3, total_steps=1)
    student = torch.tensor(STUDENT, requires_grad=True)
    kd = KD(KD.Hparams(temperature=2.0, weight=0.5), info)
    terms = kd.loss(_step(student, torch.tensor(TEACHER)))
    assert set(terms) == {"kd_source", "kd_target"}
    for value in terms.values():
        assert value.item() == pytest.approx(0.5 * numpy_kd(STUDENT, TEACHER, 2.0), rel=1e-5)
    sum(terms.values()).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0


def test_kd_component_mse_variant_on_target_only() -> None:
    info = MethodInfo(num_classes=3, student_features=3, teacher_features=3, total_steps=1)
    kd = KD(KD.Hparams(variant="mse", domains="target", weight=2.0), info)
    terms = kd.loss(_step(torch.tensor(STUDENT), torch.tensor(TEACHER)))
    expected = 2.0 * float(np.mean((np.asarray(STUDENT) - np.asarray(TEACHER)) ** 2))
    assert list(terms) == ["kd_target"]
    assert terms["kd_target"].item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("bad", [{"temperature": -1.0}, {"temperature": 0.0}, {"weight": -0.1}, {"variant": "l1"}, {"domains": "all"}])
def test_kd_rejects_invalid_hparams(bad: dict) -> None:
    with pytest.raises(ValueError):
        KD.Hparams(**bad)
