"""CDAN against Long et al.'s multilinear conditioning, its randomized map and CDAN+E's entropy weights, checked with NumPy."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from distillation_helpers import assert_rejects_hparams, fixed_step, hparam_defaults
from torch import nn

from cdkd_bench import MethodInfo, Outputs
from cdkd_bench.testing import check_method
from cdkd_plugins.adaptation.cdan import (
    CDAN,
    conditional_domain_loss,
    entropy_weights,
    multilinear_map,
    randomized_multilinear_map,
)

FEATURES = [[0.5, -1.0, 2.0], [1.5, 0.2, -0.3]]                    # N = 2, D = 3
PROBABILITIES = [[0.1, 0.2, 0.3, 0.4], [0.7, 0.1, 0.1, 0.1]]       # N = 2, C = 4
SOURCE_LOGITS = [1.2, -0.4, 0.3]
TARGET_LOGITS = [-2.0, 0.7]


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def numpy_bce(z: np.ndarray, label: float) -> np.ndarray:
    p = sigmoid(np.asarray(z, dtype=np.float64))
    return -(label * np.log(p) + (1.0 - label) * np.log(1.0 - p))


def numpy_entropy_weights(probabilities: np.ndarray) -> np.ndarray:
    """w = 1 + exp(−H(p)), H in nats, rescaled so the batch's weights sum to its size."""
    h = -np.array([sum(p * np.log(p) for p in row if p > 0) for row in probabilities])
    w = 1.0 + np.exp(-h)
    return w * len(w) / w.sum()


def numpy_softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def info(features: int = 3, classes: int = 4) -> MethodInfo:
    return MethodInfo(num_classes=classes, student_features=features, teacher_features=None, total_steps=10)


def test_multilinear_map_is_the_flattened_outer_product() -> None:
    h = multilinear_map(torch.tensor(FEATURES), torch.tensor(PROBABILITIES))
    assert h.shape == (2, 3 * 4)
    expected = np.stack([np.outer(f, g).reshape(-1) for f, g in zip(FEATURES, PROBABILITIES, strict=True)])
    np.testing.assert_allclose(h.numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("max_dim", [11, 12])
def test_the_randomized_map_is_used_exactly_when_d_times_c_exceeds_the_maximum(max_dim: int) -> None:
    cdan = CDAN(CDAN.Hparams(max_multilinear_dim=max_dim, randomized_dim=5), info(3, 4))
    first = next(m for m in cdan.discriminator if isinstance(m, nn.Linear))
    randomized = 3 * 4 > max_dim
    assert cdan.randomized is randomized
    assert first.in_features == (5 if randomized else 12)
    assert {name for name, _ in cdan.named_buffers()} == ({"feature_matrix", "prediction_matrix"} if randomized else set())
    h = cdan.condition(torch.tensor(FEATURES), torch.tensor(PROBABILITIES))
    assert h.shape == ((2, 5) if randomized else (2, 12))


def test_the_randomized_map_matches_its_formula_on_the_modules_fixed_matrices() -> None:
    d = 6
    cdan = CDAN(CDAN.Hparams(max_multilinear_dim=4, randomized_dim=d), info(3, 4))
    r_f, r_g = cdan.feature_matrix.numpy(), cdan.prediction_matrix.numpy()
    assert r_f.shape == (3, d) and r_g.shape == (4, d)
    assert not any(p is cdan.feature_matrix or p is cdan.prediction_matrix for p in cdan.parameters()), "the matrices are buffers, never trained"
    h = cdan.condition(torch.tensor(FEATURES), torch.tensor(PROBABILITIES))
    expected = (np.asarray(FEATURES) @ r_f) * (np.asarray(PROBABILITIES) @ r_g) / np.sqrt(d)
    np.testing.assert_allclose(h.numpy(), expected, rtol=1e-5, atol=1e-6)
    again = CDAN(CDAN.Hparams(max_multilinear_dim=4, randomized_dim=d), info(3, 4))
    assert torch.equal(again.feature_matrix, cdan.feature_matrix) and torch.equal(again.prediction_matrix, cdan.prediction_matrix)


def test_the_randomized_map_preserves_inner_products_on_average() -> None:
    """E[<T(f, g), T(f', g')>] = <f, f'> <g, g'> for Gaussian matrices: checked with many of them."""
    g = torch.Generator().manual_seed(1)
    f, p = torch.tensor(FEATURES, dtype=torch.float64), torch.tensor(PROBABILITIES, dtype=torch.float64)
    d = 200_000
    r_f, r_g = torch.randn(3, d, generator=g, dtype=torch.float64), torch.randn(4, d, generator=g, dtype=torch.float64)
    t = randomized_multilinear_map(f, p, r_f, r_g)
    exact = float(np.dot(FEATURES[0], FEATURES[1]) * np.dot(PROBABILITIES[0], PROBABILITIES[1]))
    assert float(t[0] @ t[1]) == pytest.approx(exact, abs=0.05)


def test_entropy_weights_match_numpy() -> None:
    probabilities = np.array([[0.98, 0.01, 0.01], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0.0]])
    got = entropy_weights(torch.tensor(probabilities, dtype=torch.float32))
    np.testing.assert_allclose(got.numpy(), numpy_entropy_weights(probabilities), rtol=1e-5)
    assert got.sum().item() == pytest.approx(3.0, rel=1e-6)
    assert got[0] > got[2] > got[1], "confident predictions weigh more"


def test_weighted_domain_loss_matches_numpy() -> None:
    ws, wt = np.array([1.2, 0.5, 1.3]), np.array([0.8, 1.2])
    got = conditional_domain_loss(torch.tensor(SOURCE_LOGITS), torch.tensor(TARGET_LOGITS), torch.tensor(ws), torch.tensor(wt)).item()
    expected = 0.5 * ((ws * numpy_bce(SOURCE_LOGITS, 1.0)).sum() / 3 + (wt * numpy_bce(TARGET_LOGITS, 0.0)).sum() / 2)
    assert got == pytest.approx(expected, rel=1e-6)
    plain = conditional_domain_loss(torch.tensor(SOURCE_LOGITS), torch.tensor(TARGET_LOGITS)).item()
    assert plain == pytest.approx(0.5 * (numpy_bce(SOURCE_LOGITS, 1.0).mean() + numpy_bce(TARGET_LOGITS, 0.0).mean()), rel=1e-6)


def test_no_gradient_reaches_the_predictions_through_the_conditioning() -> None:
    logits = torch.tensor([[0.3, -1.0, 2.0, 0.1], [1.0, 0.0, -0.5, 0.2]], requires_grad=True)
    for randomized in (False, True):
        features = torch.tensor(FEATURES, requires_grad=True)
        probabilities = logits.softmax(dim=1)
        if randomized:
            h = randomized_multilinear_map(features, probabilities, torch.randn(3, 5), torch.randn(4, 5))
        else:
            h = multilinear_map(features, probabilities)
        (h * torch.linspace(-1, 1, h.shape[1])).sum().backward()
        assert logits.grad is None, "g must be detached"
        assert features.grad is not None and features.grad.abs().sum() > 0


@pytest.mark.parametrize("entropy_conditioning", [False, True])
def test_the_component_on_a_fixed_linear_discriminator_matches_numpy(entropy_conditioning: bool) -> None:
    """The whole pipeline: softmax, outer product, discriminator, (weighted) cross-entropy; only the features learn."""
    hp = CDAN.Hparams(weight=0.5, entropy_conditioning=entropy_conditioning)
    cdan = CDAN(hp, info(3, 4))
    w = np.linspace(-0.6, 0.5, 12)
    linear = nn.Linear(12, 1)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor(w, dtype=torch.float32).unsqueeze(0))
        linear.bias.fill_(0.05)
    cdan.discriminator = linear
    source_logits = [[0.3, -1.0, 2.0, 0.1], [1.0, 0.0, -0.5, 0.2], [4.0, -2.0, 0.0, 0.0]]
    target_logits = [[0.0, 0.0, 0.0, 0.0], [-1.0, 3.0, 0.5, 0.5]]
    source_features = [[0.5, -1.0, 2.0], [1.5, 0.2, -0.3], [-0.7, 0.9, 0.4]]
    target_features = [[0.1, 0.1, -1.2], [2.0, -0.5, 0.6]]
    s_logits, t_logits = torch.tensor(source_logits, requires_grad=True), torch.tensor(target_logits, requires_grad=True)
    s_features, t_features = torch.tensor(source_features, requires_grad=True), torch.tensor(target_features, requires_grad=True)
    step = fixed_step(Outputs(s_logits, s_features), Outputs(s_logits, s_features), target_student=Outputs(t_logits, t_features))
    terms = cdan.loss(step)
    assert list(terms) == ["cdan"]

    def discriminator(features: list, logits: list) -> np.ndarray:
        g = numpy_softmax(np.asarray(logits))
        return np.stack([np.outer(f, p).reshape(-1) for f, p in zip(np.asarray(features), g, strict=True)]) @ w + 0.05

    ls, lt = numpy_bce(discriminator(source_features, source_logits), 1.0), numpy_bce(discriminator(target_features, target_logits), 0.0)
    if entropy_conditioning:
        ls = ls * numpy_entropy_weights(numpy_softmax(np.asarray(source_logits)))
        lt = lt * numpy_entropy_weights(numpy_softmax(np.asarray(target_logits)))
    assert terms["cdan"].item() == pytest.approx(0.5 * 0.5 * (ls.mean() + lt.mean()), rel=1e-5)
    terms["cdan"].backward()
    assert s_logits.grad is None and t_logits.grad is None, "neither the conditioning nor the weights send a gradient into g"
    assert s_features.grad.abs().sum() > 0 and t_features.grad.abs().sum() > 0


def test_param_groups_hold_the_discriminator_at_its_learning_rate_multiplier() -> None:
    cdan = CDAN(CDAN.Hparams(discriminator_lr_mult=0.2, max_multilinear_dim=4, randomized_dim=8), info(3, 4))
    groups = cdan.param_groups()
    assert len(groups) == 1 and groups[0]["lr_mult"] == 0.2
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in cdan.parameters()} == {id(p) for p in cdan.discriminator.parameters()}


def test_defaults() -> None:
    names = ("weight", "hidden", "gamma", "discriminator_lr_mult", "entropy_conditioning", "max_multilinear_dim", "randomized_dim")
    assert hparam_defaults(CDAN, *names) == (1.0, 256, 10.0, 1.0, False, 4096, 1024)


def test_cdan_conforms_to_the_method_contract() -> None:
    assert (CDAN.name, CDAN.version, CDAN.family, CDAN.uses_target, CDAN.needs_teacher) == ("cdan", 1, "adaptation", True, False)
    assert set(check_method(CDAN)) == {"cdan"}


def test_the_randomized_component_trains_the_features_and_the_discriminator() -> None:
    cdan = CDAN(dataclasses.replace(CDAN.Hparams(), max_multilinear_dim=4, randomized_dim=8, entropy_conditioning=True), info(3, 4))
    cdan.eval()
    features = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.2, -0.3], [-0.7, 0.9, 0.4]], requires_grad=True)
    logits = torch.tensor([[0.3, -1.0, 2.0, 0.1], [1.0, 0.0, -0.5, 0.2], [4.0, -2.0, 0.0, 0.0]])
    terms = cdan.loss(fixed_step(Outputs(logits, features), Outputs(logits, features),
                                 target_student=Outputs(logits.flip(0), features.flip(0) * 2.0)))
    terms["cdan"].backward()
    assert features.grad.abs().sum() > 0
    assert all(p.grad is not None for p in cdan.discriminator.parameters())
    assert cdan.feature_matrix.grad is None and not cdan.feature_matrix.requires_grad


@pytest.mark.parametrize("bad", [{"weight": -1.0}, {"hidden": 0}, {"gamma": 0.0}, {"discriminator_lr_mult": 0.0},
                                 {"max_multilinear_dim": 0}, {"randomized_dim": -4}, {"randomized_dim": 10.5},
                                 {"entropy_conditioning": "yes"}])
def test_cdan_rejects_invalid_hparams(bad: dict) -> None:
    assert_rejects_hparams(CDAN, bad)
