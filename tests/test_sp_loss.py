"""The similarity-preserving loss against Tung & Mori's formula, computed independently with NumPy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from distillation_helpers import VIT_STUDENT, assert_rejects_hparams, fixed_step, hparam_defaults, search_spaces, student_only_step

from cdkd_bench import MethodInfo, Outputs, Step
from cdkd_plugins.methods.sp import SP, similarity_matrix, sp_loss

RNG = np.random.default_rng(0)
STUDENT_MAP = RNG.normal(size=(4, 3, 2, 2))  # b, c, h, w: shapes differ from the teacher's on purpose
TEACHER_MAP = RNG.normal(size=(4, 5, 3, 3))


def numpy_sp(student: np.ndarray, teacher: np.ndarray) -> float:
    """1/b^2 * sum_ij (G~t_ij - G~s_ij)^2 with G = A A^T row-normalised, by loops over the batch."""
    def normalised_gram(a: np.ndarray) -> list[list[float]]:
        flat = a.reshape(len(a), -1)
        gram = [[float(sum(flat[i, k] * flat[j, k] for k in range(flat.shape[1]))) for j in range(len(a))] for i in range(len(a))]
        return [[v / math.sqrt(sum(u * u for u in row)) for v in row] for row in gram]

    gs, gt = normalised_gram(student), normalised_gram(teacher)
    b = len(student)
    return sum((gt[i][j] - gs[i][j]) ** 2 for i in range(b) for j in range(b)) / b**2


def tensor(a: np.ndarray) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.float32)


def test_similarity_matrix_by_hand() -> None:
    # Rows [1, 0] and [1, 1]: G = [[1, 1], [1, 2]] -> rows / [sqrt 2, sqrt 5].
    got = similarity_matrix(torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
    expected = [[1 / math.sqrt(2), 1 / math.sqrt(2)], [1 / math.sqrt(5), 2 / math.sqrt(5)]]
    assert got.tolist()[0] == pytest.approx(expected[0], rel=1e-6)
    assert got.tolist()[1] == pytest.approx(expected[1], rel=1e-6)


def test_loss_by_hand() -> None:
    # Student rows orthogonal: G~s = I. Teacher rows equal: G~t = all 1/sqrt 2.
    # sum of squares = 2 (1 - 1/sqrt 2)^2 + 2 (1/sqrt 2)^2 = 4 - 2 sqrt 2; divided by b^2 = 4.
    student = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    teacher = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    assert sp_loss(student, teacher).item() == pytest.approx(1 - math.sqrt(2) / 2, rel=1e-6)


def test_loss_matches_the_formula_across_channel_and_spatial_mismatch() -> None:
    got = sp_loss(tensor(STUDENT_MAP), tensor(TEACHER_MAP)).item()
    assert got == pytest.approx(numpy_sp(STUDENT_MAP, TEACHER_MAP), rel=1e-5)


def test_loss_is_zero_when_student_equals_teacher_and_is_symmetric() -> None:
    t = tensor(TEACHER_MAP)
    assert sp_loss(t, t).item() == pytest.approx(0.0, abs=1e-7)
    s = tensor(STUDENT_MAP)
    assert sp_loss(s, t).item() == pytest.approx(sp_loss(t, s).item(), rel=1e-6)


def test_loss_is_invariant_to_scale_and_to_rotations_of_the_feature_space() -> None:
    s, t = tensor(STUDENT_MAP), tensor(TEACHER_MAP)
    base = numpy_sp(STUDENT_MAP, TEACHER_MAP)
    assert sp_loss(7.5 * s, t).item() == pytest.approx(base, rel=1e-5)
    q, _ = np.linalg.qr(RNG.normal(size=(12, 12)))  # an orthogonal map of the student's c*h*w = 12 dims
    rotated = (STUDENT_MAP.reshape(4, 12) @ q).reshape(4, 3, 2, 2)
    assert sp_loss(tensor(rotated), t).item() == pytest.approx(base, rel=1e-4)


def test_loss_is_invariant_to_reordering_the_batch_consistently() -> None:
    order = [2, 0, 3, 1]
    got = sp_loss(tensor(STUDENT_MAP[order]), tensor(TEACHER_MAP[order])).item()
    assert got == pytest.approx(numpy_sp(STUDENT_MAP, TEACHER_MAP), rel=1e-5)


def test_loss_refuses_different_batch_sizes() -> None:
    with pytest.raises(ValueError):
        sp_loss(torch.ones(3, 2), torch.ones(4, 2))


def _fixed_step(student_map: np.ndarray, teacher_map: np.ndarray) -> Step:
    """A step whose networks return fixed maps for their last stage (index 3 of 4)."""
    logits = torch.zeros(len(student_map), 10)

    def outputs(m: np.ndarray) -> Outputs:
        return Outputs(logits, logits, intermediates={3: tensor(m)}, num_stages=4)

    return fixed_step(outputs(student_map), outputs(teacher_map))


@pytest.mark.parametrize("weight", [3000.0, 1.0])
def test_component_applies_the_weight_on_both_domains(weight: float) -> None:
    info = MethodInfo(num_classes=10, student_features=3, teacher_features=5, total_steps=1)
    terms = SP(SP.Hparams(weight=weight), info).loss(_fixed_step(STUDENT_MAP, TEACHER_MAP))
    assert set(terms) == {"sp_source", "sp_target"}
    for value in terms.values():
        assert value.item() == pytest.approx(weight * numpy_sp(STUDENT_MAP, TEACHER_MAP), rel=1e-5)


def test_component_target_only_and_defaults() -> None:
    assert SP.intermediates == (-1,)
    assert hparam_defaults(SP, "weight", "domains") == (3000.0, "both")
    low, high, scale = search_spaces(SP)["weight"]
    assert scale == "log" and low <= SP.Hparams().weight <= high
    info = MethodInfo(num_classes=10, student_features=3, teacher_features=5, total_steps=1)
    terms = SP(SP.Hparams(domains="target"), info).loss(_fixed_step(STUDENT_MAP, TEACHER_MAP))
    assert list(terms) == ["sp_target"]


@pytest.mark.parametrize("bad", [{"weight": -1.0}, {"domains": "all"}])
def test_rejects_invalid_hparams(bad: dict) -> None:
    assert_rejects_hparams(SP, bad)


# --------------------------------------------------------------------------- real networks


def test_gradients_reach_the_student_never_the_teacher() -> None:
    assert set(student_only_step(SP)) == {"sp_source", "sp_target"}


def test_vit_student_with_resnet_teacher() -> None:
    # The student's last stage is 192 x 8 x 8 tokens, the teacher's 128 x 2 x 2: G is b x b for both.
    assert set(student_only_step(SP, student_arch=VIT_STUDENT)) == {"sp_source", "sp_target"}
