"""DANN against Ganin et al.'s gradient reversal, λ schedule and domain cross-entropy, checked independently with NumPy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from distillation_helpers import assert_rejects_hparams, fixed_step, hparam_defaults, search_spaces
from torch import nn

from cdkd_bench import MethodInfo, Outputs
from cdkd_bench.testing import check_method
from cdkd_plugins.adaptation.common import adversarial_coefficient, reverse_gradient
from cdkd_plugins.adaptation.dann import DANN, domain_adversarial_loss

SOURCE_LOGITS = [1.2, -0.4, 0.3]   # three source examples
TARGET_LOGITS = [-2.0, 0.7]        # two target examples: unequal batches tell the averaging apart
SOURCE_FEATURES = [[0.5, -1.0, 2.0], [1.5, 0.2, -0.3], [-0.7, 0.9, 0.4]]
TARGET_FEATURES = [[0.1, 0.1, -1.2], [2.0, -0.5, 0.6]]
W, B = [0.4, -0.3, 0.25], 0.1      # a fixed linear discriminator


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def numpy_bce(z: np.ndarray, label: float) -> np.ndarray:
    """−[y log σ(z) + (1 − y) log(1 − σ(z))] per example."""
    p = sigmoid(z)
    return -(label * np.log(p) + (1.0 - label) * np.log(1.0 - p))


def numpy_domain_loss(source: list[float], target: list[float]) -> float:
    """½ (mean BCE of the source, labelled 1 + mean BCE of the target, labelled 0)."""
    return 0.5 * (numpy_bce(np.asarray(source), 1.0).mean() + numpy_bce(np.asarray(target), 0.0).mean())


def info(features: int = 3, classes: int = 2) -> MethodInfo:
    return MethodInfo(num_classes=classes, student_features=features, teacher_features=None, total_steps=10)


@pytest.mark.parametrize(("progress", "gamma"), [(0.0, 10.0), (0.5, 10.0), (1.0, 10.0), (0.3, 5.0)])
def test_adversarial_coefficient_follows_the_papers_schedule(progress: float, gamma: float) -> None:
    assert adversarial_coefficient(progress, gamma) == pytest.approx(2.0 / (1.0 + np.exp(-gamma * progress)) - 1.0, rel=1e-12, abs=1e-12)


def test_the_schedule_starts_at_zero_and_nearly_reaches_one() -> None:
    assert adversarial_coefficient(0.0) == 0.0
    assert adversarial_coefficient(1.0) == pytest.approx(0.9999092, rel=1e-6)


@pytest.mark.parametrize("progress", [0.0, 0.5, 1.0])
def test_reverse_gradient_is_the_identity_forward_and_negates_and_scales_backward(progress: float) -> None:
    lam = 2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0
    upstream = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    x = torch.tensor([[0.3, -0.1], [2.0, 1.0]], requires_grad=True)
    y = reverse_gradient(x, adversarial_coefficient(progress))
    assert torch.equal(y, x)
    (y * upstream).sum().backward()
    plain = upstream.numpy()  # the gradient of sum(x * upstream) without the layer
    np.testing.assert_allclose(x.grad.numpy(), -lam * plain, rtol=1e-6, atol=1e-12)


def test_domain_loss_matches_numpy_and_averages_the_two_domains_equally() -> None:
    got = domain_adversarial_loss(torch.tensor(SOURCE_LOGITS), torch.tensor(TARGET_LOGITS).unsqueeze(1)).item()
    assert got == pytest.approx(numpy_domain_loss(SOURCE_LOGITS, TARGET_LOGITS), rel=1e-6)
    concatenated = np.concatenate([numpy_bce(np.asarray(SOURCE_LOGITS), 1.0), numpy_bce(np.asarray(TARGET_LOGITS), 0.0)]).mean()
    assert got != pytest.approx(concatenated, rel=1e-3), "the loss is the mean of the per-domain means, not of the concatenation"


def test_domain_loss_labels_the_source_one_and_the_target_zero() -> None:
    confident = torch.tensor([20.0, 20.0])
    assert domain_adversarial_loss(confident, -confident).item() == pytest.approx(0.0, abs=1e-6)
    assert domain_adversarial_loss(-confident, confident).item() == pytest.approx(20.0, rel=1e-3)


@pytest.mark.parametrize(("progress", "weight"), [(0.0, 1.0), (0.3, 0.7), (1.0, 2.0)])
def test_discriminator_gets_the_plain_gradient_and_features_the_reversed_one(progress: float, weight: float) -> None:
    """A fixed linear discriminator z = x·w + b: every gradient is worked out in NumPy."""
    dann = DANN(DANN.Hparams(weight=weight), info())
    linear = nn.Linear(3, 1)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([W]))
        linear.bias.fill_(B)
    dann.discriminator = linear
    source = torch.tensor(SOURCE_FEATURES, requires_grad=True)
    target = torch.tensor(TARGET_FEATURES, requires_grad=True)
    step = fixed_step(Outputs(torch.zeros(3, 2), source), Outputs(torch.zeros(3, 2), source),
                      target_student=Outputs(torch.zeros(2, 2), target), progress=progress)
    terms = dann.loss(step)
    assert list(terms) == ["dann"]
    terms["dann"].backward()

    xs, xt, w = np.asarray(SOURCE_FEATURES), np.asarray(TARGET_FEATURES), np.asarray(W)
    zs, zt = xs @ w + B, xt @ w + B
    assert terms["dann"].item() == pytest.approx(weight * numpy_domain_loss(list(zs), list(zt)), rel=1e-6)
    # dL/dz: (σ(z) − y) / (2 n) for each domain, y = 1 on the source and 0 on the target
    dzs, dzt = weight * (sigmoid(zs) - 1.0) / (2 * len(zs)), weight * sigmoid(zt) / (2 * len(zt))
    lam = 2.0 / (1.0 + np.exp(-10.0 * progress)) - 1.0
    np.testing.assert_allclose(linear.weight.grad.numpy()[0], dzs @ xs + dzt @ xt, rtol=1e-5, atol=1e-8)
    assert linear.bias.grad.item() == pytest.approx(dzs.sum() + dzt.sum(), rel=1e-5, abs=1e-8)
    np.testing.assert_allclose(source.grad.numpy(), -lam * np.outer(dzs, w), rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(target.grad.numpy(), -lam * np.outer(dzt, w), rtol=1e-5, atol=1e-8)


def test_the_discriminator_reads_the_students_features_at_the_chosen_width() -> None:
    dann = DANN(DANN.Hparams(hidden=128), info(features=7))
    linears = [m for m in dann.discriminator if isinstance(m, nn.Linear)]
    assert linears[0].in_features == 7 and linears[0].out_features == 128 and linears[-1].out_features == 1


def test_param_groups_hold_the_discriminator_at_its_learning_rate_multiplier() -> None:
    dann = DANN(DANN.Hparams(discriminator_lr_mult=3.0), info())
    groups = dann.param_groups()
    assert len(groups) == 1 and groups[0]["lr_mult"] == 3.0
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in dann.discriminator.parameters()}
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in dann.parameters()}


def test_defaults_and_search_spaces() -> None:
    assert hparam_defaults(DANN, "weight", "hidden", "gamma", "discriminator_lr_mult") == (1.0, 256, 10.0, 1.0)
    spaces = search_spaces(DANN)
    assert spaces["discriminator_lr_mult"] == (0.1, 10.0, "log")
    assert 256 in spaces["hidden"] and spaces["gamma"][0] <= 10.0 <= spaces["gamma"][1]


def test_dann_conforms_to_the_method_contract() -> None:
    assert (DANN.name, DANN.version, DANN.family, DANN.uses_target, DANN.needs_teacher) == ("dann", 1, "adaptation", True, False)
    terms = check_method(DANN)
    assert set(terms) == {"dann"}


@pytest.mark.parametrize("bad", [{"weight": -0.1}, {"hidden": 0}, {"hidden": -8}, {"hidden": 64.5}, {"gamma": 0.0},
                                 {"gamma": -1.0}, {"discriminator_lr_mult": 0.0}, {"discriminator_lr_mult": -2.0}])
def test_dann_rejects_invalid_hparams(bad: dict) -> None:
    assert_rejects_hparams(DANN, bad)
