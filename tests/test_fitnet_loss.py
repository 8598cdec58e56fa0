"""The FitNets hint loss against Romero et al.'s formula, computed independently with NumPy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from distillation_helpers import (
    VIT_STUDENT,
    assert_only_the_student_learns,
    assert_rejects_hparams,
    batches,
    fixed_step,
    hparam_defaults,
    real_pair,
    search_spaces,
)

from cdkd_bench import MethodInfo, Outputs, Step
from cdkd_bench.api import NetworkInfo, StageInfo
from cdkd_bench.testing import make_step
from cdkd_plugins.methods.fitnet import FitNet, hint_loss, match_spatial

RNG = np.random.default_rng(0)
STUDENT_MAP = RNG.normal(size=(2, 2, 4, 4))  # N, C_s, H, W: the guided layer v_g
TEACHER_MAP = RNG.normal(size=(2, 3, 2, 2))  # N, C_t, H, W: the hint layer u_h
W = np.array([[0.5, -1.0], [2.0, 0.25], [-0.75, 1.5]])  # regressor weights, C_t x C_s
B = np.array([0.1, -0.2, 0.3])


def numpy_fitnet(student: np.ndarray, teacher: np.ndarray, w: np.ndarray, b: np.ndarray) -> float:
    """Mean over elements of (u_h - pool(W v_g + b))^2, with loops for the 1x1 regressor and 2x2 block means."""
    n, _, h, wd = student.shape
    _, ct, th, tw = teacher.shape
    fy, fx = h // th, wd // tw
    total, count = 0.0, 0
    for i in range(n):
        for o in range(ct):
            for y in range(th):
                for x in range(tw):
                    cell = [sum(w[o, c] * student[i, c, y * fy + dy, x * fx + dx] for c in range(student.shape[1])) + b[o]
                            for dy in range(fy) for dx in range(fx)]
                    total += (teacher[i, o, y, x] - sum(cell) / len(cell)) ** 2
                    count += 1
    return total / count


def _info(student_channels: int, teacher_channels: int) -> MethodInfo:
    def net(arch: str, channels: int) -> NetworkInfo:
        return NetworkInfo(arch, channels, tuple(StageInfo(channels, 2**k, f"s{k}") for k in range(3)))

    return MethodInfo(num_classes=3, student_features=student_channels, teacher_features=teacher_channels, total_steps=1,
                      student=net("s", student_channels), teacher=net("t", teacher_channels))


def _fixed_step(student_map: torch.Tensor, teacher_map: torch.Tensor) -> Step:
    """A step whose networks return fixed stage maps (stage -2 of 3 = index 1), so only the arithmetic is tested."""
    logits = torch.zeros(len(student_map), 3)

    def outputs(stage_map: torch.Tensor) -> Outputs:
        return Outputs(logits, logits, intermediates={1: stage_map}, num_stages=3)

    return fixed_step(outputs(student_map), outputs(teacher_map))


def _fitnet_with_known_regressor(**hparams) -> FitNet:
    fitnet = FitNet(FitNet.Hparams(**hparams), _info(2, 3))
    with torch.no_grad():
        fitnet.regressor.weight.copy_(torch.tensor(W, dtype=torch.float32).view(3, 2, 1, 1))
        fitnet.regressor.bias.copy_(torch.tensor(B, dtype=torch.float32))
    return fitnet


def test_hint_loss_is_the_mean_squared_error() -> None:
    # Worked by hand: differences 1, -2, 0, 3 -> (1 + 4 + 0 + 9) / 4 = 3.5 (no 1/2 factor).
    regressed = torch.tensor([[[[1.0, 0.0], [2.0, -1.0]]]])
    hint = torch.tensor([[[[2.0, -2.0], [2.0, 2.0]]]])
    assert hint_loss(regressed, hint).item() == pytest.approx(3.5, rel=1e-7)


def test_hint_loss_is_zero_when_the_regressed_map_equals_the_hint() -> None:
    hint = torch.tensor(TEACHER_MAP, dtype=torch.float32)
    assert hint_loss(hint.clone(), hint).item() == 0.0


def test_hint_loss_refuses_mismatched_shapes() -> None:
    with pytest.raises(ValueError):
        hint_loss(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 2, 2))


def test_match_spatial_pools_by_block_means_when_shrinking() -> None:
    x = torch.tensor(STUDENT_MAP, dtype=torch.float32)
    expected = STUDENT_MAP.reshape(2, 2, 2, 2, 2, 2).mean(axis=(3, 5))  # 4x4 -> 2x2 blocks
    assert np.allclose(match_spatial(x, (2, 2)).numpy(), expected, atol=1e-6)


def test_match_spatial_interpolates_bilinearly_when_growing() -> None:
    # Half-pixel bilinear, worked by hand: [0, 1] -> sample points -0.25, 0.25, 0.75, 1.25 -> [0, .25, .75, 1].
    x = torch.tensor([[[[0.0, 1.0]]]])
    got = match_spatial(x, (1, 4))
    assert got.flatten().tolist() == pytest.approx([0.0, 0.25, 0.75, 1.0], abs=1e-6)
    assert match_spatial(x, (1, 2)) is x


@pytest.mark.parametrize("weight", [1.0, 100.0])
def test_component_matches_the_formula_with_spatial_and_channel_mismatch(weight: float) -> None:
    fitnet = _fitnet_with_known_regressor(weight=weight)
    terms = fitnet.loss(_fixed_step(torch.tensor(STUDENT_MAP, dtype=torch.float32),
                                    torch.tensor(TEACHER_MAP, dtype=torch.float32)))
    assert set(terms) == {"fitnet_source", "fitnet_target"}
    expected = weight * numpy_fitnet(STUDENT_MAP, TEACHER_MAP, W, B)
    for value in terms.values():
        assert value.item() == pytest.approx(expected, rel=1e-5)


def test_component_is_zero_when_the_regressed_student_hits_the_hint() -> None:
    fitnet = _fitnet_with_known_regressor(domains="target")
    # The hint made from the student with the same regressor and pooling: the loss must vanish.
    regressed = np.einsum("oc,nchw->nohw", W, STUDENT_MAP) + B[None, :, None, None]
    hint = regressed.reshape(2, 3, 2, 2, 2, 2).mean(axis=(3, 5))
    terms = fitnet.loss(_fixed_step(torch.tensor(STUDENT_MAP, dtype=torch.float32), torch.tensor(hint, dtype=torch.float32)))
    assert list(terms) == ["fitnet_target"]
    assert terms["fitnet_target"].item() == pytest.approx(0.0, abs=1e-10)


def test_defaults_and_search_space() -> None:
    hp = FitNet.Hparams()
    assert hparam_defaults(FitNet, "weight", "stage", "domains") == (100.0, -2, "both")
    spaces = search_spaces(FitNet)
    assert spaces["stage"] == (-3, -2, -1) and hp.stage in spaces["stage"]
    low, high, scale = spaces["weight"]
    assert scale == "log" and 0 < low <= hp.weight <= high
    assert hp.domains in spaces["domains"]


@pytest.mark.parametrize("bad", [{"weight": -1.0}, {"domains": "all"}, {"stage": 1.5}, {"stage": True}])
def test_rejects_invalid_hparams(bad: dict) -> None:
    assert_rejects_hparams(FitNet, bad)


def test_rejects_a_stage_that_one_network_lacks_and_missing_network_info() -> None:
    with pytest.raises(ValueError, match="stage -4"):
        FitNet(FitNet.Hparams(stage=-4), _info(2, 3))
    with pytest.raises(ValueError, match="MethodInfo"):
        FitNet(FitNet.Hparams(), MethodInfo(num_classes=3, student_features=2, teacher_features=3, total_steps=1))


# --------------------------------------------------------------------------- real networks


def _check_gradients(student: torch.nn.Module, teacher: torch.nn.Module, fitnet: FitNet) -> None:
    terms = fitnet.loss(make_step(student, teacher, *batches(4), stages=fitnet.intermediates))
    assert set(terms) == {"fitnet_source", "fitnet_target"}
    assert_only_the_student_learns(terms, student, teacher, extra_modules=(fitnet.regressor,))


@pytest.mark.parametrize("stage", [-3, -2, -1])
def test_gradients_reach_the_student_and_regressor_never_the_teacher(stage: int) -> None:
    student, teacher, info = real_pair()
    fitnet = FitNet(FitNet.Hparams(stage=stage), info)
    assert fitnet.intermediates == (stage,)
    assert fitnet.regressor.in_channels == info.student.stage(stage).channels
    assert fitnet.regressor.out_channels == info.teacher.stage(stage).channels
    assert fitnet.regressor.in_channels != fitnet.regressor.out_channels  # 8-64 wide student, 16-128 teacher
    _check_gradients(student, teacher, fitnet)


def test_vit_student_with_resnet_teacher() -> None:
    student, teacher, info = real_pair(VIT_STUDENT)
    fitnet = FitNet(FitNet.Hparams(), info)
    assert (fitnet.regressor.in_channels, fitnet.regressor.out_channels) == (192, 64)  # 8x8 tokens -> 4x4 hint
    _check_gradients(student, teacher, fitnet)
