"""The attention-transfer loss against Zagoruyko & Komodakis's formula, computed independently with NumPy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from distillation_helpers import VIT_STUDENT, assert_rejects_hparams, fixed_step, hparam_defaults, search_spaces, student_only_step

from cdkd_bench import MethodInfo, Outputs, Step
from cdkd_plugins.methods.at import AT, at_distance, attention_map

RNG = np.random.default_rng(0)
# Three stages per network, with different channels (and, for the last, different spatial sizes).
STUDENT_MAPS = [RNG.normal(size=(3, 2, 4, 4)), RNG.normal(size=(3, 4, 2, 2)), RNG.normal(size=(3, 5, 4, 4))]
TEACHER_MAPS = [RNG.normal(size=(3, 6, 4, 4)), RNG.normal(size=(3, 3, 2, 2)), RNG.normal(size=(3, 7, 2, 2))]


def numpy_q(a: np.ndarray, p: float, size: tuple[int, int]) -> np.ndarray:
    """Per sample: F = sum_c |A_c|^p, block-averaged down to ``size``, flattened, divided by its L2 norm."""
    n, c, h, w = a.shape
    fy, fx = h // size[0], w // size[1]
    out = np.zeros((n, size[0] * size[1]))
    for i in range(n):
        for y in range(size[0]):
            for x in range(size[1]):
                block = [sum(abs(a[i, k, y * fy + dy, x * fx + dx]) ** p for k in range(c)) for dy in range(fy) for dx in range(fx)]
                out[i, y * size[1] + x] = sum(block) / len(block)
        out[i] /= math.sqrt(sum(v * v for v in out[i]))
    return out


def numpy_distance(s: np.ndarray, t: np.ndarray, p: float) -> float:
    """Mean over the batch of || q_s - q_t ||_2 (unsquared), both at the smaller spatial size."""
    size = (min(s.shape[2], t.shape[2]), min(s.shape[3], t.shape[3]))
    qs, qt = numpy_q(s, p, size), numpy_q(t, p, size)
    return sum(math.sqrt(sum((qs[i] - qt[i]) ** 2)) for i in range(len(qs))) / len(qs)


def tensor(a: np.ndarray) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.float32)


def test_attention_map_by_hand() -> None:
    # Two channels on a 1x2 map: F = [1^2 + 2^2, (-2)^2 + 0^2] = [5, 4]; with p = 1: [3, 2].
    a = torch.tensor([[[[1.0, -2.0]], [[2.0, 0.0]]]])
    assert attention_map(a, 2.0).flatten().tolist() == pytest.approx([5.0, 4.0])
    assert attention_map(a, 1.0).flatten().tolist() == pytest.approx([3.0, 2.0])


def test_distance_by_hand() -> None:
    # Q_s = [5, 4] / sqrt(41) (map above), Q_t = [1, 0]: ||Q_s - Q_t||_2 = sqrt(2 - 2 * 5 / sqrt(41)).
    student = torch.tensor([[[[1.0, -2.0]], [[2.0, 0.0]]]])
    teacher = torch.tensor([[[[3.0, 0.0]]]])
    assert at_distance(student, teacher, 2.0).item() == pytest.approx(math.sqrt(2 - 10 / math.sqrt(41)), rel=1e-6)


@pytest.mark.parametrize("p", [1.0, 2.0, 4.0])
@pytest.mark.parametrize("stage", [0, 1, 2])
def test_distance_matches_the_formula(p: float, stage: int) -> None:
    s, t = STUDENT_MAPS[stage], TEACHER_MAPS[stage]
    assert at_distance(tensor(s), tensor(t), p).item() == pytest.approx(numpy_distance(s, t, p), rel=1e-5)


def test_distance_is_symmetric_and_bounded() -> None:
    s, t = tensor(STUDENT_MAPS[0]), tensor(TEACHER_MAPS[0])
    assert at_distance(s, t, 2.0).item() == pytest.approx(at_distance(t, s, 2.0).item(), rel=1e-6)
    assert 0 < at_distance(s, t, 2.0).item() <= 2.0


def test_distance_is_zero_for_the_same_attention_whatever_the_channels() -> None:
    t = tensor(TEACHER_MAPS[0])
    assert at_distance(t, t, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    # Scaled, sign-flipped, channel-permuted and channel-duplicated copies carry the same attention.
    student = torch.cat([-3.0 * t.flip(1), 0.5 * t], dim=1)
    assert at_distance(student, t, 2.0).item() == pytest.approx(0.0, abs=1e-6)


def test_spatial_mismatch_pools_the_attention_map_not_the_signed_activations() -> None:
    # Each 2x2 block of the student holds +1 and -1: pooling A first would give zero attention;
    # pooling F(A) = 1 everywhere gives a uniform map, equal to the teacher's uniform 2x2 map.
    student = torch.tensor([[1.0, -1.0, 1.0, -1.0]] * 4).view(1, 1, 4, 4)
    teacher = torch.full((1, 3, 2, 2), 0.7)
    assert at_distance(student, teacher, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    assert at_distance(teacher, student, 2.0).item() == pytest.approx(0.0, abs=1e-6)


def test_zero_difference_gives_zero_gradient_not_nan() -> None:
    t = tensor(TEACHER_MAPS[1])
    s = t.clone().requires_grad_(True)
    at_distance(s, t, 2.0).backward()
    assert torch.isfinite(s.grad).all() and s.grad.abs().max() < 1e-5


def _fixed_step(student_maps: list[np.ndarray], teacher_maps: list[np.ndarray]) -> Step:
    """A step whose networks return fixed maps for their last three of 5 stages (indices 2, 3, 4)."""
    logits = torch.zeros(3, 10)

    def outputs(maps: list[np.ndarray]) -> Outputs:
        return Outputs(logits, logits, intermediates={2 + k: tensor(m) for k, m in enumerate(maps)}, num_stages=5)

    return fixed_step(outputs(student_maps), outputs(teacher_maps))


@pytest.mark.parametrize(("weight", "p"), [(2.0, 2.0), (1000.0, 2.0), (5.0, 4.0)])
def test_component_is_beta_over_two_times_the_sum_over_stages(weight: float, p: float) -> None:
    info = MethodInfo(num_classes=10, student_features=5, teacher_features=7, total_steps=1)
    at = AT(AT.Hparams(weight=weight, p=p), info)
    terms = at.loss(_fixed_step(STUDENT_MAPS, TEACHER_MAPS))
    assert set(terms) == {"at_source", "at_target"}
    expected = weight / 2 * sum(numpy_distance(s, t, p) for s, t in zip(STUDENT_MAPS, TEACHER_MAPS, strict=True))
    for value in terms.values():
        assert value.item() == pytest.approx(expected, rel=1e-5)


def test_component_source_only_and_defaults() -> None:
    assert AT.intermediates == (-3, -2, -1)
    assert hparam_defaults(AT, "weight", "p", "domains") == (2.0, 2.0, "both")
    for name, space in search_spaces(AT).items():
        default = getattr(AT.Hparams(), name)
        assert default in space if isinstance(default, str) else space[0] <= default <= space[1], name
    info = MethodInfo(num_classes=10, student_features=5, teacher_features=7, total_steps=1)
    terms = AT(AT.Hparams(domains="source"), info).loss(_fixed_step(TEACHER_MAPS, TEACHER_MAPS))
    assert list(terms) == ["at_source"] and terms["at_source"].item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("bad", [{"weight": -1.0}, {"p": 0.5}, {"p": 0.0}, {"domains": "all"}])
def test_rejects_invalid_hparams(bad: dict) -> None:
    assert_rejects_hparams(AT, bad)


# --------------------------------------------------------------------------- real networks


def test_gradients_reach_the_student_never_the_teacher() -> None:
    assert set(student_only_step(AT)) == {"at_source", "at_target"}


def test_vit_student_with_resnet_teacher() -> None:
    # 8x8 ViT tokens with 192 channels against the ResNet's 8x8 / 4x4 / 2x2 maps with 32-128 channels.
    assert set(student_only_step(AT, student_arch=VIT_STUDENT)) == {"at_source", "at_target"}
