"""Yang et al. 2023, "From Knowledge Distillation to Self-Knowledge Distillation: A Unified Approach
with Normalized Loss and Customized Soft Labels" (ICCV 2023), the NKD loss. https://arxiv.org/abs/2303.13005

The paper decomposes KD's cross-entropy with the teacher's soft labels into a target part and a
non-target part, and observes that the non-target part makes the student's non-target
probabilities (which sum to ``1 - S_t``) chase the teacher's (which sum to ``1 - T_t``). NKD
normalises both non-target distributions to sum to one and keeps the teacher's target
probability as a soft target weight. With ``t`` the target class, ``T = softmax(v)`` and
``S = softmax(z)`` (teacher, student; temperature 1), and ``N(.)`` the renormalisation over the
non-target classes at temperature ``lambda`` (``N(T_i^lambda) = softmax(v_{-t} / lambda)_i``), the
form implemented is the paper's, in cross-entropy form, averaged over the batch:

    L_NKD = - T_t log S_t  -  gamma * lambda^2 * sum_{i != t} N(T_i^lambda) log N(S_i^lambda)

(the authors' code computes the same expression). The paper adds it to the usual
cross-entropy with the label, which the engine computes on the source batch. Defaults are
the paper's: ``lambda`` (``temperature``) = 1, ``gamma`` = 1.5.

The non-target part is written as a cross-entropy, not a KL divergence: it equals
``gamma * lambda^2 * (KL(N(T^lambda) || N(S^lambda)) + H(N(T^lambda)))``. The teacher's entropy ``H``
does not depend on the student, so the gradients are those of the KL form; only the logged
value differs by that constant.

Cross-domain adaptation (this suite's, not the paper's): the target class is the true label on
the labelled source batch and the teacher's argmax on the unlabelled target batch, so there
``T_t`` is the teacher's top probability. Target labels are never read.

Difference from one published version of the authors' loss: it builds the non-target mask with
``scatter_(1, label, 1)`` on a tensor of ones, which keeps every class, so its "non-target" term
also covers the target class. We follow the paper and drop the target class.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from cdkd_bench import Method, MethodInfo, RegisterMethods, Step, hookimpl

from .common import DOMAINS, check_domains, check_non_negative, check_positive, domains_field
from .dkd import split_target, target_classes


def nkd_terms(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    target: torch.Tensor,
    gamma: float,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(-mean T_t log S_t, -gamma lambda^2 mean sum_{i != t} N(T_i) log N(S_i))``."""
    student_logits = student_logits.to(torch.promote_types(student_logits.dtype, torch.float32))
    teacher_logits = teacher_logits.to(torch.promote_types(teacher_logits.dtype, torch.float32))
    index = target.view(-1, 1)
    log_s_target = F.log_softmax(student_logits, dim=1).gather(1, index).squeeze(1)
    t_target = F.softmax(teacher_logits, dim=1).gather(1, index).squeeze(1)
    target_term = -(t_target * log_s_target).mean()

    _, s_nt = split_target(student_logits, target)
    _, t_nt = split_target(teacher_logits, target)
    log_s_hat = F.log_softmax(s_nt / temperature, dim=1)
    t_hat = F.softmax(t_nt / temperature, dim=1)
    non_target_term = -gamma * temperature**2 * (t_hat * log_s_hat).sum(dim=1).mean()
    return target_term, non_target_term


def nkd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    target: torch.Tensor,
    gamma: float,
    temperature: float,
) -> torch.Tensor:
    """The NKD loss ``L_NKD`` (target part plus normalised non-target part)."""
    target_term, non_target_term = nkd_terms(student_logits, teacher_logits, target, gamma, temperature)
    return target_term + non_target_term


class NKD(Method):
    """Normalized KD: teacher-weighted target term plus KD between renormalised non-target distributions."""

    name = "nkd"
    version = 1
    family = "distillation"
    needs_teacher = True
    uses_target = True

    @dataclass(frozen=True)
    class Hparams:
        weight: float = field(default=1.0, metadata={"search": (0.1, 10.0, "log")})
        gamma: float = field(default=1.5, metadata={"search": (0.25, 4.0, "log")})
        temperature: float = field(default=1.0, metadata={"search": (1.0, 8.0)})
        domains: str = domains_field()

        def __post_init__(self) -> None:
            check_non_negative(weight=self.weight)
            check_non_negative(gamma=self.gamma)
            check_positive(temperature=self.temperature)
            check_domains(self.domains)

    def __init__(self, hparams: NKD.Hparams, info: MethodInfo) -> None:
        super().__init__(hparams, info)
        if info.num_classes < 2:
            raise ValueError(f"nkd needs at least 2 classes (a target and a non-target), got {info.num_classes}")

    def loss(self, step: Step) -> dict[str, torch.Tensor]:
        hp = self.hparams
        terms = {}
        for domain in DOMAINS[hp.domains]:
            student, teacher = step.student(domain).logits, step.teacher(domain).logits
            target = target_classes(domain, step.batch(domain), teacher)
            target_term, non_target_term = nkd_terms(student, teacher, target, hp.gamma, hp.temperature)
            terms[f"target_{domain}"] = hp.weight * target_term
            terms[f"nontarget_{domain}"] = hp.weight * non_target_term
        return terms


@hookimpl
def cdkd_register_methods(register: RegisterMethods) -> None:
    register(NKD)
