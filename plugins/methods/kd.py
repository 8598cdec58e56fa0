"""Hinton et al. 2015, "Distilling the Knowledge in a Neural Network". https://arxiv.org/abs/1503.02531"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from cdkd_bench import Method, RegisterMethods, Step, hookimpl

if TYPE_CHECKING:
    from cdkd_bench.api import DomainRole

VARIANTS = ("kl", "mse")
DOMAINS: dict[str, tuple[DomainRole, ...]] = {"both": ("source", "target"), "source": ("source",), "target": ("target",)}


def hinton_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(teacher_T || student_T), averaged over the batch.

    The T^2 factor keeps the gradient scale independent of the temperature (Hinton et al.,
    section 2). ``kl_div`` takes the student's log-probabilities as input and the
    teacher's as target: swapping them is a known bug in public CDKD code.
    """
    student_log_p = F.log_softmax(student_logits / temperature, dim=1)
    teacher_log_p = F.log_softmax(teacher_logits / temperature, dim=1)
    kl = F.kl_div(student_log_p, teacher_log_p, log_target=True, reduction="batchmean")
    return kl * temperature**2


def logit_mse(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Squared error between logits, averaged over batch and classes (Ba & Caruana 2014)."""
    return F.mse_loss(student_logits, teacher_logits)


class KD(Method):
    """Hinton KD: match the teacher's softened predictions on target and source batches."""

    name = "kd"
    version = 1
    family = "distillation"
    needs_teacher = True
    uses_target = True

    @dataclass(frozen=True)
    class Hparams:
        temperature: float = field(default=4.0, metadata={"search": (1.0, 8.0)})
        weight: float = field(default=1.0, metadata={"search": (0.1, 10.0, "log")})
        variant: str = field(default="kl", metadata={"search": VARIANTS})
        domains: str = field(default="both", metadata={"search": tuple(DOMAINS)})

        def __post_init__(self) -> None:
            if self.temperature <= 0:
                raise ValueError(f"temperature must be positive, got {self.temperature}")
            if self.weight < 0:
                raise ValueError(f"weight must be zero or positive, got {self.weight}")
            if self.variant not in VARIANTS:
                raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}")
            if self.domains not in DOMAINS:
                raise ValueError(f"domains must be one of {', '.join(DOMAINS)}, got {self.domains!r}")

    def loss(self, step: Step) -> dict[str, torch.Tensor]:
        hp = self.hparams
        terms = {}
        for domain in DOMAINS[hp.domains]:
            student, teacher = step.student(domain).logits, step.teacher(domain).logits
            if hp.variant == "kl":
                value = hinton_kd(student, teacher, hp.temperature)
            else:
                value = logit_mse(student, teacher)
            terms[f"kd_{domain}"] = hp.weight * value
        return terms


@hookimpl
def cdkd_register_methods(register: RegisterMethods) -> None:
    register(KD)
