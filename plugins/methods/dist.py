"""Huang et al. 2022, "Knowledge Distillation from A Stronger Teacher" (DIST, NeurIPS 2022). https://arxiv.org/abs/2205.10536

DIST replaces KD's exact match of probabilities with a match of *relations*, measured by the
Pearson correlation ``rho(u, v) = cov(u, v) / (std(u) std(v))`` and its distance
``d(u, v) = 1 - rho(u, v)``. With ``Y = softmax(Z / tau)`` row-wise (an (N, C) matrix per
network):

    inter-class relation  L_inter = 1/N sum_i d(Y^S[i, :], Y^T[i, :])   (each sample's prediction vector)
    intra-class relation  L_intra = 1/C sum_j d(Y^S[:, j], Y^T[:, j])   (each class's scores across the batch)
    L_DIST = tau^2 * (beta * L_inter + gamma * L_intra)

Because ``d(m1 u + n1, m2 v + n2) = d(u, v)`` for ``m1 m2 > 0`` (as the paper notes), the
inter-class term is unchanged by a positive affine change of any sample's prediction vector,
and the intra-class term by one of any class's column: the student must reproduce the
teacher's ranking and relative spread, not its exact probabilities.

Defaults: beta = gamma = 1 and tau = 1, the paper's ImageNet setting and the authors' code
defaults. CIFAR-100 ports of DIST commonly use beta = gamma = 2 and tau = 4; those are
reachable through the hparams. The intra-class term needs a batch of at least 2 examples
(a correlation across one sample is undefined; it then contributes a constant with no
gradient).

Numerics: as in the authors' code, ``rho = <u - mean u, v - mean v> / (|u - mean u| |v - mean v| + eps)``
with ``eps = 1e-8``, so a constant vector (zero spread) gets correlation 0 rather than NaN.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from cdkd_bench import Method, RegisterMethods, Step, hookimpl

from .common import DOMAINS, check_domains, check_non_negative, check_positive, domains_field

EPS = 1e-8


def pearson_correlation(a: torch.Tensor, b: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Pearson correlation of each row of ``a`` with the same row of ``b``: shape (rows,)."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def inter_class_relation(student_probs: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
    """``1 - mean over samples of rho(Y^S[i, :], Y^T[i, :])`` (correlation across classes)."""
    return 1.0 - pearson_correlation(student_probs, teacher_probs).mean()


def intra_class_relation(student_probs: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
    """``1 - mean over classes of rho(Y^S[:, j], Y^T[:, j])`` (correlation across the batch)."""
    return 1.0 - pearson_correlation(student_probs.t(), teacher_probs.t()).mean()


def dist_terms(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(tau^2 * L_inter, tau^2 * L_intra)`` on probabilities ``softmax(Z / tau)``."""
    student_logits = student_logits.to(torch.promote_types(student_logits.dtype, torch.float32))
    teacher_logits = teacher_logits.to(torch.promote_types(teacher_logits.dtype, torch.float32))
    ys = F.softmax(student_logits / temperature, dim=1)
    yt = F.softmax(teacher_logits / temperature, dim=1)
    scale = temperature**2
    return scale * inter_class_relation(ys, yt), scale * intra_class_relation(ys, yt)


def dist_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, beta: float, gamma: float, temperature: float) -> torch.Tensor:
    """``tau^2 * (beta * L_inter + gamma * L_intra)``, the paper's distillation term."""
    inter, intra = dist_terms(student_logits, teacher_logits, temperature)
    return beta * inter + gamma * intra


class DIST(Method):
    """DIST: match the teacher's inter-class and intra-class relations by Pearson correlation."""

    name = "dist"
    version = 1
    family = "distillation"
    needs_teacher = True
    uses_target = True

    @dataclass(frozen=True)
    class Hparams:
        weight: float = field(default=1.0, metadata={"search": (0.1, 10.0, "log")})
        beta: float = field(default=1.0, metadata={"search": (0.25, 4.0, "log")})
        gamma: float = field(default=1.0, metadata={"search": (0.25, 4.0, "log")})
        temperature: float = field(default=1.0, metadata={"search": (1.0, 8.0)})
        domains: str = domains_field()

        def __post_init__(self) -> None:
            check_non_negative(weight=self.weight)
            check_non_negative(beta=self.beta)
            check_non_negative(gamma=self.gamma)
            check_positive(temperature=self.temperature)
            check_domains(self.domains)

    def loss(self, step: Step) -> dict[str, torch.Tensor]:
        hp = self.hparams
        terms = {}
        for domain in DOMAINS[hp.domains]:
            inter, intra = dist_terms(step.student(domain).logits, step.teacher(domain).logits, hp.temperature)
            terms[f"inter_{domain}"] = hp.weight * hp.beta * inter
            terms[f"intra_{domain}"] = hp.weight * hp.gamma * intra
        return terms


@hookimpl
def cdkd_register_methods(register: RegisterMethods) -> None:
    register(DIST)
