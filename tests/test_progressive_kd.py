"""progressive_kd against Nguyen-Meidine et al. 2020's balance, computed independently with NumPy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from distillation_helpers import assert_only_the_student_learns, fixed_step, one_step_terms

from cdkd_bench import Outputs
from cdkd_bench.testing import check_method
from cdkd_plugins.methods.progressive_kd import ProgressiveKD, distillation_share

S_LOGITS = [[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [1.0, -1.0, 0.0]]
T_LOGITS = [[1.5, 1.0, -0.5], [-1.0, 0.0, 2.0], [0.5, 0.5, 0.5]]
S_TARGET_LOGITS = [[0.0, 1.0, 0.0], [2.0, 2.0, -1.0], [0.3, -0.3, 1.2]]
T_TARGET_LOGITS = [[0.2, 1.4, -0.2], [1.0, 0.0, 0.0], [-0.5, 0.0, 0.9]]
S_FEATURES = [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]
T_FEATURES = [[2.0, 1.0], [1.5, 2.0], [3.0, 0.0]]


def numpy_kl(student: list[list[float]], teacher: list[list[float]], temperature: float) -> float:
    """T² · mean_i Σ_c p_t log(p_t / p_s), softmax at temperature T: teacher to student."""
    def log_softmax(z: np.ndarray) -> np.ndarray:
        z = z / temperature
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    log_ps, log_pt = log_softmax(np.asarray(student)), log_softmax(np.asarray(teacher))
    return float((np.exp(log_pt) * (log_pt - log_ps)).sum(axis=1).mean() * temperature**2)


def numpy_mmd(source: list[list[float]], target: list[list[float]]) -> float:
    """Biased MK-MMD² with DAN's five kernels exp(−d / (2^u σ)), u = −2…2, σ the joint batch's mean squared distance."""
    xs, xt = np.asarray(source), np.asarray(target)
    joint = np.concatenate([xs, xt])
    sigma = np.mean([[np.sum((a - b) ** 2) for b in joint] for a in joint])

    def kernel_mean(a: np.ndarray, b: np.ndarray) -> float:
        d = np.array([[np.sum((x - y) ** 2) for y in b] for x in a])
        return float(np.mean([np.exp(-d / (2.0**u * sigma)) for u in range(-2, 3)], axis=0).mean())

    return kernel_mean(xs, xs) + kernel_mean(xt, xt) - 2 * kernel_mean(xs, xt)


def test_the_distillation_share_grows_geometrically_from_start_to_end() -> None:
    assert distillation_share(0.0, 0.1, 0.9) == pytest.approx(0.1)
    assert distillation_share(0.5, 0.1, 0.9) == pytest.approx(0.3)  # 0.1 · 9^½
    assert distillation_share(1.0, 0.1, 0.9) == pytest.approx(0.9)


@pytest.mark.parametrize("progress", [0.0, 0.3, 1.0])
def test_the_terms_match_the_paper_balance(progress: float) -> None:
    hp = ProgressiveKD.Hparams(temperature=2.0)
    step = fixed_step(Outputs(torch.tensor(S_LOGITS), torch.tensor(S_FEATURES)), torch.tensor(T_LOGITS),
                      target_student=Outputs(torch.tensor(S_TARGET_LOGITS), torch.tensor(T_FEATURES)),
                      target_teacher=torch.tensor(T_TARGET_LOGITS), progress=progress)
    terms = ProgressiveKD(hp, None).loss(step)  # type: ignore[arg-type]
    beta = 0.1 * 9.0**progress
    ramp = 2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0
    kd = numpy_kl(S_TARGET_LOGITS, T_TARGET_LOGITS, 2.0) + numpy_kl(S_LOGITS, T_LOGITS, 2.0)
    assert terms["distillation"].item() == pytest.approx(beta * kd, rel=1e-5)
    assert terms["adaptation"].item() == pytest.approx((1 - beta) * ramp * numpy_mmd(S_FEATURES, T_FEATURES), rel=1e-4, abs=1e-7)


def test_the_divergence_runs_from_teacher_to_student() -> None:
    step = fixed_step(torch.tensor(S_LOGITS), torch.tensor(T_LOGITS), progress=1.0)
    got = ProgressiveKD(ProgressiveKD.Hparams(temperature=1.0), None).loss(step)["distillation"].item()  # type: ignore[arg-type]
    assert got == pytest.approx(0.9 * 2 * numpy_kl(S_LOGITS, T_LOGITS, 1.0), rel=1e-5)
    assert got != pytest.approx(0.9 * 2 * numpy_kl(T_LOGITS, S_LOGITS, 1.0), rel=1e-3)  # the swapped arguments give another value


def test_only_the_student_learns_on_real_networks() -> None:
    terms, student, teacher = one_step_terms(ProgressiveKD)
    assert_only_the_student_learns(terms, student, teacher)


def test_conforms_and_refuses_bad_hparams() -> None:
    check_method(ProgressiveKD)
    for bad in ({"temperature": 0.0}, {"beta_start": 0.5, "beta_end": 0.4}, {"beta_end": 1.5}, {"mmd_weight": -1.0}):
        with pytest.raises(ValueError):
            ProgressiveKD.Hparams(**bad)
