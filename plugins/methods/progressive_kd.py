"""Nguyen-Meidine et al. 2020, "Joint Progressive Knowledge Distillation and Unsupervised Domain
Adaptation" (IJCNN 2020). https://arxiv.org/abs/2005.07839

The paper trains an adapting teacher and a student together, and moves the weight of the objective
from adaptation to distillation as training advances: at epoch e of E the distillation terms weigh
β = β₀ (β_E / β₀)^(e/E) (β₀ = 0.1, β_E = 0.9) and the adaptation terms 1 − β, the MMD term further
ramped in by the DANN schedule 2 / (1 + exp(−10 p)) − 1. Here the teacher comes from the teacher
stage, frozen (adapt it there with ``--teacher-recipe dan``), so the progressive balance is between
the student's own adaptation (multi-kernel MMD between its source and target features, as DAN) and
Hinton KD from the teacher on target and source batches, with β continuous in the training progress.
The KL divergence runs from the teacher to the student, KL(p_T ‖ p_S); one public implementation
of the paper passes the arguments the other way round. The engine's source cross-entropy stays at
weight 1 (the paper folds it into the source distillation term).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from cdkd_bench import Method, RegisterMethods, Step, hookimpl

from ..adaptation.common import adversarial_coefficient
from ..adaptation.dan import kernel_powers, multi_kernel_mmd
from .common import DOMAINS, check_domains, check_non_negative, check_positive, domains_field
from .kd import hinton_kd


def distillation_share(progress: float, start: float, end: float) -> float:
    """β at ``progress`` ∈ [0, 1]: geometric from ``start`` to ``end`` (the paper's exp(growth · epoch))."""
    return float(start * (end / start) ** progress)


class ProgressiveKD(Method):
    """Distil while adapting: the student's MMD adaptation gives way to KD from the teacher as training advances."""

    name = "progressive_kd"
    version = 1
    family = "distillation"
    needs_teacher = True
    uses_target = True

    @dataclass(frozen=True)
    class Hparams:
        temperature: float = field(default=4.0, metadata={"search": (1.0, 20.0, "log")})
        beta_start: float = field(default=0.1, metadata={"search": (0.01, 0.5, "log")})
        beta_end: float = field(default=0.9, metadata={"search": (0.5, 1.0)})
        mmd_weight: float = field(default=1.0, metadata={"search": (0.1, 10.0, "log")})
        domains: str = domains_field()

        def __post_init__(self) -> None:
            check_domains(self.domains)
            check_positive(temperature=self.temperature, beta_start=self.beta_start, beta_end=self.beta_end)
            check_non_negative(mmd_weight=self.mmd_weight)
            if not self.beta_start <= self.beta_end <= 1.0:
                raise ValueError(f"need beta_start <= beta_end <= 1 (distillation's share grows), got {self.beta_start} and {self.beta_end}")

    def loss(self, step: Step) -> dict[str, torch.Tensor]:
        hp = self.hparams
        beta = distillation_share(step.progress, hp.beta_start, hp.beta_end)
        source, target = step.student("source"), step.student("target")
        mmd = multi_kernel_mmd(source.features, target.features, kernel_powers(5))  # DAN's five kernels
        kd = torch.stack([hinton_kd(step.student(d).logits, step.teacher(d).logits, hp.temperature) for d in DOMAINS[hp.domains]]).sum()
        return {
            "adaptation": (1.0 - beta) * adversarial_coefficient(step.progress) * hp.mmd_weight * mmd,
            "distillation": beta * kd,
        }


@hookimpl
def cdkd_register_methods(register: RegisterMethods) -> None:
    register(ProgressiveKD)
