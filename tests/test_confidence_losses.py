"""MCC, BNM, entropy minimisation and information maximisation against their papers' formulas, computed with NumPy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from distillation_helpers import batches, fixed_step, real_pair

from cdkd_bench import Batch, MethodInfo
from cdkd_bench.testing import check_method, make_step
from cdkd_plugins.adaptation.bnm import BNM, batch_nuclear_norm_loss
from cdkd_plugins.adaptation.entmin import EntMin, mean_entropy
from cdkd_plugins.adaptation.im import IM, information_maximisation
from cdkd_plugins.adaptation.mcc import MCC, class_confusion

LOGITS = [[2.0, 0.5, -1.0, 0.0], [0.1, 0.2, 0.3, -0.4], [-1.5, 3.0, 0.5, 1.0], [0.0, -2.0, 1.0, 2.5], [1.2, 1.1, -0.3, 0.4]]
INFO = MethodInfo(num_classes=4, student_features=4, teacher_features=None, total_steps=1)


def softmax(logits: list[list[float]] | np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def row_entropy(p: np.ndarray) -> np.ndarray:
    return -(p * np.log(p)).sum(axis=1)


def numpy_mcc(logits: list[list[float]] | np.ndarray, temperature: float, frozen_from: np.ndarray | None = None) -> float:
    """Jin et al. eqs. 1-6 written out with loops; ``frozen_from``: logits whose entropy weights are used (held constant)."""
    p = softmax(logits, temperature)
    weight_source = p if frozen_from is None else softmax(frozen_from, temperature)
    b, c = p.shape
    certainty = 1.0 + np.exp(-row_entropy(weight_source))
    w = b * certainty / certainty.sum()
    correlation = np.zeros((c, c))
    for i in range(b):
        for j in range(c):
            for k in range(c):
                correlation[j, k] += p[i, j] * w[i] * p[i, k]
    total = 0.0
    for j in range(c):
        for k in range(c):
            if j != k:
                total += abs(correlation[j, k] / sum(correlation[m, k] for m in range(c)))
    return total / c


# --------------------------------------------------------------------------- mcc


@pytest.mark.parametrize("temperature", [1.0, 2.5, 5.0])
def test_class_confusion_matches_the_formula(temperature: float) -> None:
    got = class_confusion(torch.tensor(LOGITS), temperature).item()
    assert got == pytest.approx(numpy_mcc(LOGITS, temperature), rel=1e-5)


def test_class_confusion_known_values() -> None:
    # uniform predictions: every normalised column is 1/C everywhere, so the off-diagonal mass is (C - 1) / C
    assert class_confusion(torch.zeros(3, 5), 2.5).item() == pytest.approx(4 / 5, rel=1e-6)
    # confident predictions of distinct classes: no confusion at all
    assert class_confusion(40.0 * torch.eye(4), 1.0).item() == pytest.approx(0.0, abs=1e-6)


def test_class_confusion_entropy_weights_carry_no_gradient() -> None:
    """The reference code detaches the entropy weights: the gradient is that of the loss with the weights held constant."""
    logits = torch.tensor(LOGITS, requires_grad=True)
    class_confusion(logits, 2.5).backward()
    base = np.asarray(LOGITS, dtype=np.float64)
    eps = 1e-5
    frozen, live = np.zeros_like(base), np.zeros_like(base)
    for index in np.ndindex(base.shape):
        up, down = base.copy(), base.copy()
        up[index] += eps
        down[index] -= eps
        frozen[index] = (numpy_mcc(up, 2.5, frozen_from=base) - numpy_mcc(down, 2.5, frozen_from=base)) / (2 * eps)
        live[index] = (numpy_mcc(up, 2.5) - numpy_mcc(down, 2.5)) / (2 * eps)
    assert logits.grad is not None
    np.testing.assert_allclose(logits.grad.numpy(), frozen, rtol=1e-3, atol=1e-6)
    assert not np.allclose(frozen, live, rtol=1e-3, atol=1e-6)  # so the check above tells the two apart


def test_mcc_component_weighs_the_target_logits() -> None:
    source, target = torch.zeros(5, 4), torch.tensor(LOGITS, requires_grad=True)
    terms = MCC(MCC.Hparams(weight=0.5, temperature=2.0), INFO).loss(fixed_step(source, source, target_student=target))
    assert list(terms) == ["mcc"]
    assert terms["mcc"].item() == pytest.approx(0.5 * numpy_mcc(LOGITS, 2.0), rel=1e-5)
    terms["mcc"].backward()
    assert target.grad is not None and target.grad.abs().sum() > 0


# --------------------------------------------------------------------------- bnm


@pytest.mark.parametrize("rows", [LOGITS, LOGITS[:2], [[0.3, -0.2, 0.0, 0.1]] * 3])
def test_batch_nuclear_norm_matches_numpy_svd(rows: list[list[float]]) -> None:
    expected = -np.linalg.svd(softmax(rows), compute_uv=False).sum() / len(rows)
    assert batch_nuclear_norm_loss(torch.tensor(rows)).item() == pytest.approx(expected, rel=1e-5)


def test_batch_nuclear_norm_known_values() -> None:
    # confident, distinct predictions: B orthonormal rows, nuclear norm B; B identical uniform rows over C classes:
    # rank one, (1/C) 1_B 1_C^T, whose one singular value is sqrt(B) sqrt(C) / C = sqrt(B / C)
    assert batch_nuclear_norm_loss(40.0 * torch.eye(3)).item() == pytest.approx(-1.0, rel=1e-6)
    assert batch_nuclear_norm_loss(torch.zeros(4, 9)).item() == pytest.approx(-(2 / 3) / 4, rel=1e-6)


def test_batch_nuclear_norm_gradient_is_finite_with_repeated_singular_values() -> None:
    logits = torch.zeros(4, 3, requires_grad=True)
    batch_nuclear_norm_loss(logits).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_bnm_component_weighs_the_target_logits() -> None:
    source, target = torch.zeros(5, 4), torch.tensor(LOGITS)
    terms = BNM(BNM.Hparams(weight=2.0), INFO).loss(fixed_step(source, source, target_student=target))
    expected = -2.0 * np.linalg.svd(softmax(LOGITS), compute_uv=False).sum() / 5
    assert list(terms) == ["bnm"] and terms["bnm"].item() == pytest.approx(expected, rel=1e-5)


# --------------------------------------------------------------------------- entmin


def test_mean_entropy_matches_the_formula() -> None:
    expected = row_entropy(softmax(LOGITS)).mean()
    assert mean_entropy(torch.tensor(LOGITS)).item() == pytest.approx(expected, rel=1e-6)
    assert mean_entropy(torch.zeros(2, 6)).item() == pytest.approx(np.log(6), rel=1e-6)


def test_entmin_component_weighs_the_target_logits() -> None:
    source, target = torch.zeros(5, 4), torch.tensor(LOGITS)
    terms = EntMin(EntMin.Hparams(weight=0.1), INFO).loss(fixed_step(source, source, target_student=target))
    assert list(terms) == ["entropy"]
    assert terms["entropy"].item() == pytest.approx(0.1 * row_entropy(softmax(LOGITS)).mean(), rel=1e-6)


# --------------------------------------------------------------------------- im


def numpy_im(logits: list[list[float]] | np.ndarray, diversity_weight: float) -> float:
    p = softmax(logits)
    mean = p.mean(axis=0)
    return float(row_entropy(p).mean() + diversity_weight * (mean * np.log(mean)).sum())


@pytest.mark.parametrize("diversity_weight", [0.0, 1.0, 2.0])
def test_information_maximisation_matches_the_formula(diversity_weight: float) -> None:
    got = information_maximisation(torch.tensor(LOGITS), diversity_weight).item()
    assert got == pytest.approx(numpy_im(LOGITS, diversity_weight), rel=1e-5)


def test_confident_but_collapsed_predictions_score_worse_than_confident_and_diverse() -> None:
    collapsed = 20.0 * torch.eye(4)[[0, 0, 0, 0]]
    diverse = 20.0 * torch.eye(4)[[0, 1, 2, 3]]
    got_collapsed, got_diverse = information_maximisation(collapsed, 1.0).item(), information_maximisation(diverse, 1.0).item()
    assert got_collapsed == pytest.approx(numpy_im(collapsed.numpy(), 1.0), abs=1e-5)
    assert got_diverse == pytest.approx(numpy_im(diverse.numpy(), 1.0), abs=1e-5)
    assert got_collapsed == pytest.approx(0.0, abs=1e-5) and got_diverse == pytest.approx(-np.log(4), rel=1e-5)
    assert got_diverse < got_collapsed
    # entropy minimisation alone cannot tell the two apart
    assert mean_entropy(collapsed).item() == pytest.approx(mean_entropy(diverse).item(), abs=1e-6)


def test_im_component_weighs_the_target_logits() -> None:
    source, target = torch.zeros(5, 4), torch.tensor(LOGITS)
    terms = IM(IM.Hparams(weight=0.5, diversity_weight=2.0), INFO).loss(fixed_step(source, source, target_student=target))
    assert list(terms) == ["im"] and terms["im"].item() == pytest.approx(0.5 * numpy_im(LOGITS, 2.0), rel=1e-5)


# --------------------------------------------------------------------------- all four


COMPONENTS = [MCC, BNM, EntMin, IM]


@pytest.mark.parametrize("component", COMPONENTS, ids=lambda c: c.name)
def test_conforms_to_the_contract(component) -> None:  # type: ignore[no-untyped-def]
    assert component.family == "adaptation" and component.uses_target and not component.needs_teacher
    # 0.1 where weight 1 collapses a student trained from scratch (see the modules' docstrings).
    assert component.Hparams().weight == (0.1 if component in (EntMin, IM) else 1.0)
    check_method(component)


@pytest.mark.parametrize("component", COMPONENTS, ids=lambda c: c.name)
def test_gradient_reaches_a_real_student_from_the_target_batch_only(component) -> None:  # type: ignore[no-untyped-def]
    student, _teacher, info = real_pair()
    source, target = batches()
    poisoned = Batch(torch.full_like(source.x, float("nan")), source.y, source.index)  # reading the source would show as NaN
    terms = component(component.Hparams(), info).loss(make_step(student, None, poisoned, target))
    assert len(terms) == 1
    value = next(iter(terms.values()))
    assert torch.isfinite(value)
    value.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(torch.isfinite(p.grad).all() for p in student.parameters() if p.grad is not None)


@pytest.mark.parametrize(
    ("component", "bad"),
    [(MCC, {"weight": -0.1}), (MCC, {"temperature": 0.0}), (MCC, {"temperature": -1.0}), (BNM, {"weight": -1.0}),
     (EntMin, {"weight": -0.5}), (IM, {"weight": -1.0}), (IM, {"diversity_weight": -0.1})],
)
def test_rejects_invalid_hparams(component, bad: dict) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=next(iter(bad))):
        component.Hparams(**bad)
