"""NST against Huang & Wang's formula, with the expected numbers computed independently (by hand and with NumPy loops)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from cdkd_nst import NST, nst_mmd2

from cdkd_bench import Batch, MethodInfo, Outputs, Step
from cdkd_bench.testing import TinyNet, check_method, make_step

RNG = np.random.default_rng(7)
# One stage of 2 images: 3 student channels against 5 teacher channels on a 4x4 map.
STUDENT = RNG.normal(size=(2, 3, 4, 4))
TEACHER = RNG.normal(size=(2, 5, 4, 4))


def tensor(a: np.ndarray) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.float32)


def numpy_mmd2(s: np.ndarray, t: np.ndarray, d: int = 2, c: float = 0.0) -> float:
    """The paper's three double sums, written out, per image; then the batch mean. Maps must share H and W."""
    total = 0.0
    for n in range(s.shape[0]):
        fs = [row / math.sqrt(sum(v * v for v in row)) for row in s[n].reshape(s.shape[1], -1)]
        ft = [row / math.sqrt(sum(v * v for v in row)) for row in t[n].reshape(t.shape[1], -1)]

        def k(x: np.ndarray, y: np.ndarray) -> float:
            return (sum(float(a) * float(b) for a, b in zip(x, y, strict=True)) + c) ** d

        tt = sum(k(a, b) for a in ft for b in ft) / len(ft) ** 2
        ss = sum(k(a, b) for a in fs for b in fs) / len(fs) ** 2
        ts = sum(k(a, b) for a in ft for b in fs) / (len(ft) * len(fs))
        total += tt + ss - 2 * ts
    return total / s.shape[0]


def block_mean(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(N, C, H, W) averaged over equal blocks down to ``size`` (H and W multiples of it)."""
    n, c, h, w = a.shape
    return a.reshape(n, c, size[0], h // size[0], size[1], w // size[1]).mean(axis=(3, 5))


# --------------------------------------------------------------------------- the formula


def test_by_hand() -> None:
    # Teacher: one channel [3, 0] -> [1, 0]. Student: [0, 2] -> [0, 1] and [1, 1] -> [1, 1]/sqrt(2).
    # k = (x.y)^2: K_TT = 1; K_SS = [[1, 0.5], [0.5, 1]] (mean 0.75); K_TS = [0, 0.5] (mean 0.25).
    # MMD2 = 1 + 0.75 - 2 * 0.25 = 1.25.
    teacher = torch.tensor([[[[3.0, 0.0]]]])
    student = torch.tensor([[[[0.0, 2.0]], [[1.0, 1.0]]]])
    assert nst_mmd2(student, teacher).item() == pytest.approx(1.25, rel=1e-6)
    # The linear kernel (d = 1): K_TT = 1, K_SS mean (1 + 1 + 2 * 0.7071) / 4, K_TS mean 0.7071 / 2.
    r = 1 / math.sqrt(2)
    assert nst_mmd2(student, teacher, degree=1).item() == pytest.approx(1 + (2 + 2 * r) / 4 - r, rel=1e-6)


@pytest.mark.parametrize(("d", "c"), [(2, 0.0), (1, 0.0), (2, 0.5), (3, 1.0)])
def test_matches_the_double_sums_with_different_channel_counts(d: int, c: float) -> None:
    expected = numpy_mmd2(STUDENT, TEACHER, d, c)
    assert nst_mmd2(tensor(STUDENT), tensor(TEACHER), d, c).item() == pytest.approx(expected, rel=1e-5)


def test_quadratic_kernel_is_the_distance_of_the_position_gram_matrices() -> None:
    # The derivation behind "channels may differ": for d = 2, c = 0,
    # MMD2 = || G_T / C_T - G_S / C_S ||_F^2 with G = F^T F (HW x HW, summed over channels).
    total = 0.0
    for n in range(STUDENT.shape[0]):
        fs = STUDENT[n].reshape(3, -1)
        ft = TEACHER[n].reshape(5, -1)
        fs = fs / np.linalg.norm(fs, axis=1, keepdims=True)
        ft = ft / np.linalg.norm(ft, axis=1, keepdims=True)
        total += float(np.sum((ft.T @ ft / 5 - fs.T @ fs / 3) ** 2))
    assert nst_mmd2(tensor(STUDENT), tensor(TEACHER)).item() == pytest.approx(total / 2, rel=1e-5)


def test_spatial_mismatch_pools_the_larger_map_before_normalising() -> None:
    big = RNG.normal(size=(2, 4, 8, 8))
    expected = numpy_mmd2(block_mean(big, (4, 4)), TEACHER)
    assert nst_mmd2(tensor(big), tensor(TEACHER)).item() == pytest.approx(expected, rel=1e-5)
    expected = numpy_mmd2(STUDENT, block_mean(big, (4, 4)))
    assert nst_mmd2(tensor(STUDENT), tensor(big)).item() == pytest.approx(expected, rel=1e-5)


def test_zero_for_the_same_patterns_whatever_scale_and_duplication() -> None:
    t = tensor(TEACHER)
    # Each channel rescaled (normalisation removes it) and the whole set duplicated (the same distribution).
    student = torch.cat([2.5 * t, 0.1 * t], dim=1)
    assert nst_mmd2(student, t).item() == pytest.approx(0.0, abs=1e-6)
    assert nst_mmd2(tensor(STUDENT), t).item() > 0.01


def test_symmetric() -> None:
    s, t = tensor(STUDENT), tensor(TEACHER)
    assert nst_mmd2(s, t).item() == pytest.approx(nst_mmd2(t, s).item(), rel=1e-6)


def _fixed_step() -> Step:
    """A step whose networks return the fixed maps as stage 1 of 3 (stage -2), for both domains."""
    logits = torch.zeros(2, 4)
    student = Outputs(logits, logits, intermediates={1: tensor(STUDENT)}, num_stages=3)
    teacher = Outputs(logits, logits, intermediates={1: tensor(TEACHER)}, num_stages=3)
    source, target = Batch(torch.zeros(2, 3, 4, 4), torch.zeros(2, dtype=torch.long)), Batch(torch.ones(2, 3, 4, 4), None)
    return Step(source, target, 0.5, lambda _x: student, lambda _d, _v, _b: teacher)


@pytest.mark.parametrize(("weight", "degree"), [(100.0, 2), (2.0, 2), (7.0, 1)])
def test_component_is_lambda_over_two_times_the_mmd(weight: float, degree: int) -> None:
    info = MethodInfo(num_classes=4, student_features=3, teacher_features=5, total_steps=1)
    terms = NST(NST.Hparams(weight=weight, degree=degree), info).loss(_fixed_step())
    assert set(terms) == {"nst_source", "nst_target"}
    for value in terms.values():
        assert value.item() == pytest.approx(weight / 2 * numpy_mmd2(STUDENT, TEACHER, degree), rel=1e-5)
    only = NST(NST.Hparams(domains="target"), info).loss(_fixed_step())
    assert list(only) == ["nst_target"]


@pytest.mark.parametrize("bad", [{"weight": -1.0}, {"stage": 1.5}, {"degree": 3}, {"domains": "all"}])
def test_rejects_invalid_hparams(bad: dict) -> None:
    with pytest.raises(ValueError):
        NST.Hparams(**bad)


# --------------------------------------------------------------------------- real networks


def test_gradients_reach_the_student_never_the_teacher() -> None:
    torch.manual_seed(0)
    student = TinyNet(4, (4, 6, 8), (1, 2, 2))    # stage -2: 6 channels, 8x8
    teacher = TinyNet(4, (5, 7, 9), (2, 2, 1))    # stage -2: 7 channels, 4x4
    teacher.eval()                                # parameters left trainable, so a leak would show
    nst = NST(NST.Hparams(), MethodInfo(num_classes=4, student_features=8, teacher_features=9, total_steps=1))
    source = Batch(torch.randn(4, 3, 16, 16), torch.arange(4))
    target = Batch(torch.randn(4, 3, 16, 16), None)
    terms = nst.loss(make_step(student, teacher, source, target, stages=nst.intermediates))
    total = sum(terms.values())
    assert isinstance(total, torch.Tensor) and total.item() > 0
    total.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())


def test_conforms_to_the_method_contract() -> None:
    terms = check_method(NST)
    assert set(terms) == {"nst_source", "nst_target"}
