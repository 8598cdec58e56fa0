"""Ganin, Ustinova, Ajakan, Germain, Larochelle, Laviolette, Marchand & Lempitsky 2016, "Domain-Adversarial
Training of Neural Networks", JMLR 17(59). https://arxiv.org/abs/1505.07818

A domain discriminator (``common.Discriminator``: two hidden ReLU layers with dropout, one logit) reads the
student's pooled features of the source and the target batch through a gradient reversal layer. The
discriminator descends the binary cross-entropy of telling the two domains apart; the reversal layer hands
the features the negated gradient scaled by the paper's schedule λ_p = 2 / (1 + exp(−γ p)) − 1 (γ = 10, p the
training progress), so the student ascends the same loss and learns features the discriminator cannot
separate, while the engine's source cross-entropy keeps them discriminative. Choices made here: the source
is labelled 1 and the target 0 (the paper has it the other way round; the loss is symmetric in that
choice); the loss is the mean of the source batch's mean cross-entropy and the target batch's, so each
domain counts equally whatever the batch sizes (with equal sizes this is the mean over the concatenation);
the discriminator's width is an hparam (the paper uses 1024 units on 2048-d features), and it learns at the
student's learning rate times ``discriminator_lr_mult`` (1 in the paper). The term's ``weight`` scales both
the discriminator's gradient and the reversed gradient reaching the features. The paper's annealed
learning-rate schedule is the engine's concern, not this component's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cdkd_bench import Method, MethodInfo, RegisterMethods, Step, hookimpl

from .common import (
    Discriminator,
    adversarial_coefficient,
    check_non_negative,
    check_positive,
    reverse_gradient,
    weight_field,
)

HIDDEN = (128, 256, 512, 1024)
"""Discriminator widths searched (the paper's is 1024)."""


def domain_adversarial_loss(source_logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    """The discriminator's binary cross-entropy, source labelled 1 and target 0.

    Logits are (N,) or (N, 1); the result is ½ (mean over the source batch + mean over the target batch),
    so both domains weigh the same even when their batches differ in size.
    """
    source = source_logits.reshape(-1).float()
    target = target_logits.reshape(-1).float()
    source_term = F.binary_cross_entropy_with_logits(source, torch.ones_like(source))
    target_term = F.binary_cross_entropy_with_logits(target, torch.zeros_like(target))
    return 0.5 * (source_term + target_term)


def discriminate(
    discriminator: nn.Module, source_features: torch.Tensor, target_features: torch.Tensor, coefficient: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The discriminator's logits (N,) on both batches, read through one gradient reversal layer.

    The discriminator's own parameters get the plain gradient; the features get it negated and scaled
    by ``coefficient``.
    """
    joint = reverse_gradient(torch.cat([source_features, target_features]), coefficient)
    logits = discriminator(joint).reshape(-1)
    return logits[: len(source_features)], logits[len(source_features):]


class DANN(Method):
    """DANN: a gradient-reversed domain discriminator on the student's pooled features."""

    name = "dann"
    version = 1
    family = "adaptation"
    uses_target = True
    needs_teacher = False

    @dataclass(frozen=True)
    class Hparams:
        weight: float = weight_field(1.0)
        hidden: int = field(default=256, metadata={"search": HIDDEN})
        gamma: float = field(default=10.0, metadata={"search": (1.0, 30.0, "log")})
        discriminator_lr_mult: float = field(default=1.0, metadata={"search": (0.1, 10.0, "log")})

        def __post_init__(self) -> None:
            check_non_negative(weight=self.weight)
            if not isinstance(self.hidden, int) or isinstance(self.hidden, bool):
                raise ValueError(f"hidden must be a whole number of units, got {self.hidden!r}")
            check_positive(hidden=self.hidden, gamma=self.gamma, discriminator_lr_mult=self.discriminator_lr_mult)

    def __init__(self, hparams: Any, info: MethodInfo) -> None:
        super().__init__(hparams, info)
        self.discriminator = Discriminator(info.student_features, hparams.hidden)

    def loss(self, step: Step) -> dict[str, torch.Tensor]:
        hp = self.hparams
        coefficient = adversarial_coefficient(step.progress, hp.gamma)
        source, target = discriminate(self.discriminator, step.student("source").features, step.student("target").features, coefficient)
        return {"dann": hp.weight * domain_adversarial_loss(source, target)}

    def param_groups(self) -> list[dict[str, Any]]:
        return [{"params": list(self.discriminator.parameters()), "lr_mult": self.hparams.discriminator_lr_mult}]


@hookimpl
def cdkd_register_methods(register: RegisterMethods) -> None:
    register(DANN)
