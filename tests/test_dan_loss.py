"""DAN's multi-kernel MMD against a NumPy double loop over Long et al.'s Gaussian kernel family."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from distillation_helpers import assert_rejects_hparams, fixed_step, hparam_defaults

from cdkd_bench import MethodInfo, Outputs
from cdkd_bench.testing import check_method
from cdkd_plugins.adaptation.dan import DAN, kernel_powers, mean_squared_distance, multi_kernel_mmd

SOURCE = [[0.5, -1.0], [1.5, 0.2], [-0.7, 0.9]]              # three source examples
TARGET = [[0.1, 0.1], [2.0, -0.5], [0.3, 1.4], [-1.1, -0.2]]  # four target examples


def numpy_bandwidth(points: np.ndarray) -> float:
    """The mean of ‖z_i − z_j‖² over all ordered pairs (i, j) of the batch, i = j included."""
    n = len(points)
    return sum(float(np.sum((points[i] - points[j]) ** 2)) for i in range(n) for j in range(n)) / n**2


def numpy_mmd(source: list, target: list, powers: tuple) -> float:
    """mean k(s, s') + mean k(t, t') − 2 mean k(s, t), k = mean_u exp(−‖x − y‖² / (2^u σ)), σ of the joint batch."""
    s, t = np.asarray(source, dtype=np.float64), np.asarray(target, dtype=np.float64)
    sigma = numpy_bandwidth(np.concatenate([s, t]))

    def k(x: np.ndarray, y: np.ndarray) -> float:
        return float(np.mean([np.exp(-np.sum((x - y) ** 2) / (2.0**u * sigma)) for u in powers]))

    def mean_k(a: np.ndarray, b: np.ndarray) -> float:
        return sum(k(a[i], b[j]) for i in range(len(a)) for j in range(len(b))) / (len(a) * len(b))

    return mean_k(s, s) + mean_k(t, t) - 2.0 * mean_k(s, t)


@pytest.mark.parametrize("powers", [(-2, -1, 0, 1, 2), (0,), (-3, -2, -1, 0, 1)])
def test_mmd_matches_a_numpy_double_loop(powers: tuple) -> None:
    got = multi_kernel_mmd(torch.tensor(SOURCE), torch.tensor(TARGET), powers).item()
    assert got == pytest.approx(numpy_mmd(SOURCE, TARGET, powers), rel=1e-5)


def test_mmd_is_zero_for_identical_batches_and_positive_otherwise() -> None:
    powers = kernel_powers(5)
    assert multi_kernel_mmd(torch.tensor(TARGET), torch.tensor(TARGET), powers).item() == pytest.approx(0.0, abs=1e-7)
    assert multi_kernel_mmd(torch.tensor(SOURCE), torch.tensor(TARGET), powers).item() > 1e-3
    shifted = torch.tensor(TARGET) + 3.0
    nearer = multi_kernel_mmd(torch.tensor(SOURCE), torch.tensor(TARGET), powers).item()
    assert multi_kernel_mmd(shifted, torch.tensor(TARGET), powers).item() > nearer


def test_mmd_of_a_batch_whose_points_coincide_is_zero_not_nan() -> None:
    same = torch.ones(3, 2)
    assert multi_kernel_mmd(same, same.clone(), (0,)).item() == 0.0


def test_bandwidth_is_the_mean_pairwise_squared_distance() -> None:
    joint = np.concatenate([np.asarray(SOURCE), np.asarray(TARGET)])
    assert mean_squared_distance(torch.tensor(joint, dtype=torch.float32)).item() == pytest.approx(numpy_bandwidth(joint), rel=1e-5)


def test_the_bandwidth_is_a_constant_for_the_gradient() -> None:
    """The gradient equals that of the same MMD with σ frozen to a number (written out in torch here)."""
    source = torch.tensor(SOURCE, dtype=torch.float64, requires_grad=True)
    target = torch.tensor(TARGET, dtype=torch.float64, requires_grad=True)
    multi_kernel_mmd(source, target, (-1, 0, 1)).backward()
    sigma = numpy_bandwidth(np.concatenate([np.asarray(SOURCE), np.asarray(TARGET)]))
    s = torch.tensor(SOURCE, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(TARGET, dtype=torch.float64, requires_grad=True)

    def k(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        d = ((a.unsqueeze(1) - b.unsqueeze(0)) ** 2).sum(-1)
        return sum(torch.exp(-d / (2.0**u * sigma)) for u in (-1, 0, 1)) / 3

    (k(s, s).mean() + k(t, t).mean() - 2 * k(s, t).mean()).backward()
    np.testing.assert_allclose(source.grad.numpy(), s.grad.numpy(), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(target.grad.numpy(), t.grad.numpy(), rtol=1e-4, atol=1e-7)


def test_kernel_powers_are_centred_on_the_mean_distance() -> None:
    assert kernel_powers(5) == (-2, -1, 0, 1, 2)
    assert kernel_powers(1) == (0,)
    assert kernel_powers(3) == (-1, 0, 1)
    with pytest.raises(ValueError):
        kernel_powers(4)


@pytest.mark.parametrize("layers", ["features", "features+logits"])
def test_the_component_sums_the_chosen_layers(layers: str) -> None:
    source_logits, target_logits = [[1.0, 0.0], [0.2, 0.3], [-1.0, 2.0]], [[0.0, 0.0], [3.0, 1.0], [0.5, 0.5], [1.0, -1.0]]
    step = fixed_step(Outputs(torch.tensor(source_logits), torch.tensor(SOURCE)), Outputs(torch.tensor(source_logits), torch.tensor(SOURCE)),
                      target_student=Outputs(torch.tensor(target_logits), torch.tensor(TARGET)))
    info = MethodInfo(num_classes=2, student_features=2, teacher_features=None, total_steps=10)
    terms = DAN(DAN.Hparams(weight=0.3, layers=layers), info).loss(step)
    powers = (-2, -1, 0, 1, 2)
    expected = numpy_mmd(SOURCE, TARGET, powers)
    if layers == "features+logits":
        expected += numpy_mmd(source_logits, target_logits, powers)
    assert list(terms) == ["dan"]
    assert terms["dan"].item() == pytest.approx(0.3 * expected, rel=1e-5)


def test_defaults() -> None:
    assert hparam_defaults(DAN, "weight", "num_kernels", "layers") == (1.0, 5, "features")


def test_dan_conforms_to_the_method_contract() -> None:
    assert (DAN.name, DAN.version, DAN.family, DAN.uses_target, DAN.needs_teacher) == ("dan", 1, "adaptation", True, False)
    assert set(check_method(DAN)) == {"dan"}


@pytest.mark.parametrize("bad", [{"weight": -0.5}, {"num_kernels": 0}, {"num_kernels": 4}, {"num_kernels": -3},
                                 {"num_kernels": 2.5}, {"layers": "logits"}])
def test_dan_rejects_invalid_hparams(bad: dict) -> None:
    assert_rejects_hparams(DAN, bad)
