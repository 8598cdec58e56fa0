"""Sun et al. 2024, "Logit Standardization in Knowledge Distillation" (CVPR 2024). https://arxiv.org/abs/2403.01427

The paper argues that a temperature shared by teacher and student forces the student to match
the teacher's logit shift and spread, not only its logit relations. Its pre-process replaces
each logit vector by its weighted Z-score (Algorithm 1),

    Z(x; tau) = (x - mean(x)) / std(x) / tau,   std(x) = sqrt(1/K sum_k (x_k - mean(x))^2),

computed per example over the K classes, separately for teacher and student, and then applies
KD to the standardised logits (Algorithm 2):

    L = weight * tau^2 * KL(softmax(Z(v; tau)) || softmax(Z(z; tau))),   averaged over the batch,

with ``v`` the teacher's and ``z`` the student's logits. The loss is therefore invariant to
adding a constant to, or positively rescaling, either logit vector.

Standard deviation and epsilon: the paper's Algorithm 1 uses the population standard
deviation (divide by K), and so does this module. The authors' code calls ``torch.std``
(unbiased, divide by K - 1), which is the paper's Z-score at a base temperature larger by
``sqrt(K / (K - 1))``; we follow the paper. Like the authors' code we divide by
``std + 1e-7`` so a constant logit vector (zero spread) maps to zeros (the uniform
distribution) instead of NaN.

Weight: the paper's CIFAR-100 setting is base temperature 2 with ``lambda_KD = 9`` next to a
cross-entropy weight of 0.1 (its Table 4 ablation). This suite's engine keeps source
cross-entropy at weight 1, so the default ``weight = 9`` keeps the paper's KD weight, not its
KD:CE ratio of 90; raise ``weight`` to get closer to that ratio.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from cdkd_bench import Method, RegisterMethods, Step, hookimpl

from .common import DOMAINS, check_domains, check_non_negative, check_positive, domains_field

EPS = 1e-7


def standardize(logits: torch.Tensor, temperature: float, eps: float = EPS) -> torch.Tensor:
    """The weighted Z-score ``(x - mean) / (std + eps) / tau`` of each row, population std over classes."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    centred = logits - logits.mean(dim=1, keepdim=True)
    variance = centred.pow(2).mean(dim=1, keepdim=True)
    # Clamped at the smallest normal float so a zero spread has a finite (zero) gradient through sqrt.
    std = variance.clamp_min(torch.finfo(variance.dtype).tiny).sqrt()
    return centred / (std + eps) / temperature


def lskd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``tau^2 * KL(softmax(Z(teacher)) || softmax(Z(student)))``, batch mean."""
    log_ps = F.log_softmax(standardize(student_logits, temperature), dim=1)
    log_pt = F.log_softmax(standardize(teacher_logits, temperature), dim=1)
    return F.kl_div(log_ps, log_pt, log_target=True, reduction="batchmean") * temperature**2


class LSKD(Method):
    """KD on Z-score-standardised logits: the student matches the teacher's logit relations, not their scale."""

    name = "lskd"
    version = 1
    family = "distillation"
    needs_teacher = True
    uses_target = True

    @dataclass(frozen=True)
    class Hparams:
        weight: float = field(default=9.0, metadata={"search": (0.1, 30.0, "log")})
        temperature: float = field(default=2.0, metadata={"search": (1.0, 8.0)})
        domains: str = domains_field()

        def __post_init__(self) -> None:
            check_non_negative(weight=self.weight)
            check_positive(temperature=self.temperature)
            check_domains(self.domains)

    def loss(self, step: Step) -> dict[str, torch.Tensor]:
        hp = self.hparams
        terms = {}
        for domain in DOMAINS[hp.domains]:
            value = lskd_loss(step.student(domain).logits, step.teacher(domain).logits, hp.temperature)
            terms[f"lskd_{domain}"] = hp.weight * value
        return terms


@hookimpl
def cdkd_register_methods(register: RegisterMethods) -> None:
    register(LSKD)
