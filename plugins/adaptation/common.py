"""What the adaptation components share: gradient reversal and its schedule, domain discriminators,
prediction entropy, and the hparam checks.

Every function here is plain tensor arithmetic so each paper's formula can be tested on fixed tensors.
"""

from __future__ import annotations

import math
from dataclasses import field
from typing import Any

import torch
from torch import nn

from ..methods.common import check_non_negative, check_positive

__all__ = [
    "Discriminator",
    "adversarial_coefficient",
    "check_non_negative",
    "check_positive",
    "check_probability",
    "entropy",
    "reverse_gradient",
    "weight_field",
]


def weight_field(default: float = 1.0) -> Any:
    """The trade-off weight every adaptation component has, searched on a log scale."""
    return field(default=default, metadata={"search": (0.01, 10.0, "log")})


def check_probability(**values: float) -> None:
    """Hparams that are probabilities or thresholds in [0, 1]."""
    for name, value in values.items():
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be between 0 and 1, got {value}")


def adversarial_coefficient(progress: float, gamma: float = 10.0) -> float:
    """Ganin et al. 2016's schedule λ_p = 2 / (1 + exp(−γ p)) − 1 (γ = 10 in the paper), p ∈ [0, 1] the training progress.

    It rises from 0 to nearly 1, so the discriminator's noisy early signal barely reaches the features.
    """
    return 2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0


class _GradientReverse(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by −coefficient."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, coefficient: float) -> torch.Tensor:
        ctx.coefficient = coefficient
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.coefficient * grad, None


def reverse_gradient(x: torch.Tensor, coefficient: float) -> torch.Tensor:
    """The gradient reversal layer: ``x`` unchanged, its gradient negated and scaled by ``coefficient``."""
    return _GradientReverse.apply(x, coefficient)  # type: ignore[no-any-return]


def entropy(probabilities: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of each row of a (N, C) probability matrix."""
    return -(probabilities * probabilities.clamp_min(1e-12).log()).sum(dim=1)


class Discriminator(nn.Sequential):
    """The domain classifier of DANN / CDAN: two hidden ReLU layers with dropout, one logit (source = 1).

    Ganin et al. use 1024-unit layers on 2048-d features; the width is an hparam here because the
    benchmark's small students have 64–512-d features.
    """

    def __init__(self, in_features: int, hidden: int, dropout: float = 0.5) -> None:
        check_positive(in_features=in_features, hidden=hidden)
        super().__init__(
            nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, 1),
        )
