"""Deep CORAL against Sun & Saenko's loss and its gradient (their equation 4), computed independently with NumPy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from distillation_helpers import assert_rejects_hparams, fixed_step, hparam_defaults

from cdkd_bench import MethodInfo, Outputs
from cdkd_bench.testing import check_method
from cdkd_plugins.adaptation.coral import CORAL, coral_loss, covariance

SOURCE = [[0.5, -1.0, 2.0], [1.5, 0.2, -0.3], [-0.7, 0.9, 0.4], [0.0, 1.1, -1.5], [2.2, -0.4, 0.8]]  # n_s = 5, d = 3
TARGET = [[0.1, 0.1, -1.2], [2.0, -0.5, 0.6], [0.3, 1.4, 0.0], [-1.1, -0.2, 0.9]]                   # n_t = 4


def numpy_coral(source: list, target: list) -> float:
    """‖C_S − C_T‖²_F / (4 d²) with np.cov's unbiased covariances."""
    cs, ct = np.cov(np.asarray(source), rowvar=False), np.cov(np.asarray(target), rowvar=False)
    d = cs.shape[0]
    return float(np.sum((cs - ct) ** 2) / (4 * d * d))


def numpy_coral_gradient(batch: list, difference: np.ndarray) -> np.ndarray:
    """Sun & Saenko's eq. 4: ∂L/∂D = (D − 1 (1ᵀD) / n)(C_S − C_T) / (d² (n − 1)), with the sign of the batch's side."""
    x = np.asarray(batch)
    n, d = x.shape
    return (x - x.mean(axis=0)) @ difference / (d * d * (n - 1))


def test_covariance_matches_numpy() -> None:
    np.testing.assert_allclose(covariance(torch.tensor(SOURCE)).numpy(), np.cov(np.asarray(SOURCE), rowvar=False), rtol=1e-5, atol=1e-7)


def test_coral_matches_numpy() -> None:
    assert coral_loss(torch.tensor(SOURCE), torch.tensor(TARGET)).item() == pytest.approx(numpy_coral(SOURCE, TARGET), rel=1e-5)


def test_coral_is_zero_for_identical_batches() -> None:
    assert coral_loss(torch.tensor(SOURCE), torch.tensor(SOURCE)).item() == pytest.approx(0.0, abs=1e-10)
    shifted = torch.tensor(SOURCE) + 5.0  # a shift of the mean leaves the covariance alone
    assert coral_loss(shifted, torch.tensor(SOURCE)).item() == pytest.approx(0.0, abs=1e-8)


def test_gradient_flows_into_both_batches_as_in_the_paper() -> None:
    source = torch.tensor(SOURCE, dtype=torch.float64, requires_grad=True)
    target = torch.tensor(TARGET, dtype=torch.float64, requires_grad=True)
    coral_loss(source, target).backward()
    difference = np.cov(np.asarray(SOURCE), rowvar=False) - np.cov(np.asarray(TARGET), rowvar=False)
    assert source.grad.abs().sum() > 0 and target.grad.abs().sum() > 0
    np.testing.assert_allclose(source.grad.numpy(), numpy_coral_gradient(SOURCE, difference), rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(target.grad.numpy(), -numpy_coral_gradient(TARGET, difference), rtol=1e-8, atol=1e-12)


def test_coral_needs_two_examples_per_domain() -> None:
    with pytest.raises(ValueError, match="at least two examples"):
        coral_loss(torch.tensor(SOURCE[:1]), torch.tensor(TARGET))


@pytest.mark.parametrize("layer", ["logits", "features"])
def test_the_component_reads_the_chosen_layer(layer: str) -> None:
    source_logits = [[1.0, 0.0], [0.2, 0.3], [-1.0, 2.0], [0.4, 0.4], [3.0, -1.0]]
    target_logits = [[0.0, 0.0], [3.0, 1.0], [0.5, 0.5], [1.0, -1.0]]
    source = Outputs(torch.tensor(source_logits), torch.tensor(SOURCE))
    step = fixed_step(source, source, target_student=Outputs(torch.tensor(target_logits), torch.tensor(TARGET)))
    info = MethodInfo(num_classes=2, student_features=3, teacher_features=None, total_steps=10)
    terms = CORAL(CORAL.Hparams(weight=2.5, layer=layer), info).loss(step)
    expected = numpy_coral(source_logits, target_logits) if layer == "logits" else numpy_coral(SOURCE, TARGET)
    assert list(terms) == ["coral"]
    assert terms["coral"].item() == pytest.approx(2.5 * expected, rel=1e-5)


def test_defaults() -> None:
    assert hparam_defaults(CORAL, "weight", "layer") == (1.0, "logits")


def test_coral_conforms_to_the_method_contract() -> None:
    assert (CORAL.name, CORAL.version, CORAL.family, CORAL.uses_target, CORAL.needs_teacher) == ("coral", 1, "adaptation", True, False)
    assert set(check_method(CORAL)) == {"coral"}


@pytest.mark.parametrize("bad", [{"weight": -1.0}, {"layer": "fc8"}, {"layer": "both"}])
def test_coral_rejects_invalid_hparams(bad: dict) -> None:
    assert_rejects_hparams(CORAL, bad)
