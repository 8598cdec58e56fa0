"""Zhao et al. 2022, "Decoupled Knowledge Distillation" (CVPR 2022). https://arxiv.org/abs/2203.08679

With ``p = softmax(z / T)`` and ``t`` the target class, the paper splits each prediction into
the binary probabilities ``b = (p_t, 1 - p_t)`` and the non-target distribution renormalised
over the other classes, ``p_hat_i = p_i / (1 - p_t)`` for ``i != t``. KD then decomposes as
(the paper's reformulation of KD)

    KL(p^T || p^S) = KL(b^T || b^S) + (1 - p_t^T) KL(p_hat^T || p_hat^S)
    KD             = TCKD           + (1 - p_t^T) NCKD

and DKD drops the coupling weight ``(1 - p_t^T)`` and weighs the two parts freely:

    DKD = alpha * TCKD + beta * NCKD,

both at temperature ``T`` and multiplied by ``T^2`` (as in KD), averaged over the batch. Paper
defaults: alpha = 1, beta = 8, T = 4.

Cross-domain adaptation (this suite's, not the paper's): DKD needs the target class. On the
labelled source batch it is the true label, as in the paper; on the unlabelled target batch it
is the teacher's argmax (the teacher's pseudo-label). Target labels are never read.

Warm-up: the reference implementation (mdistiller) multiplies the loss by
``min(epoch / warmup, 1)``, with ``warmup = 20`` of 240 epochs on CIFAR-100 (1 of 100 on
ImageNet). Here ``warmup`` is a fraction of training and the factor is
``min(step.progress / warmup, 1)``; the default 1/12 is the CIFAR-100 schedule's 20/240.
``warmup = 0`` turns the ramp off.

Differences from the reference implementation, numerically immaterial: it takes ``log`` of
the summed binary probabilities and masks the target logit with ``-1000`` for NCKD; here the
binary log-probabilities come from log-sum-exp over the logits and the target class is
removed exactly, which stays finite when ``p_t`` rounds to 1. The reference's first epoch
already has weight ``1/warmup`` (its epoch counter starts at 1); here the ramp starts at 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from cdkd_bench import Batch, Method, MethodInfo, RegisterMethods, Step, hookimpl

from .common import DOMAINS, check_domains, check_non_negative, check_positive, domains_field


def _full_precision(x: torch.Tensor) -> torch.Tensor:
    """float16/bfloat16 (autocast) → float32; float32/float64 unchanged."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def target_classes(domain: str, batch: Batch, teacher_logits: torch.Tensor) -> torch.Tensor:
    """The class each example's target/non-target split is made around.

    The true label on the labelled source batch; the teacher's argmax on the target batch
    (unlabelled under ``uda``: the suite's cross-domain adaptation of target-class methods).
    """
    if domain == "source" and batch.y is not None:
        return batch.y.to(teacher_logits.device).long()
    return teacher_logits.argmax(dim=1)


def split_target(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(target logit (N,), non-target logits (N, C-1))`` with class order kept."""
    n, c = logits.shape
    keep = torch.ones_like(logits, dtype=torch.bool).scatter_(1, target.view(-1, 1), False)
    return logits.gather(1, target.view(-1, 1)).squeeze(1), logits[keep].view(n, c - 1)


def _binary_log_probs(logits: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    """``log b = (log p_t, log(1 - p_t))`` at temperature ``T``, shape (N, 2), via log-sum-exp."""
    z = logits / temperature
    z_t, z_nt = split_target(z, target)
    log_norm = torch.logsumexp(z, dim=1)
    return torch.stack([z_t - log_norm, torch.logsumexp(z_nt, dim=1) - log_norm], dim=1)


def tckd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    """Target-class KD: ``T^2 * KL(b^T || b^S)`` over (target, all non-target), batch mean."""
    log_bs = _binary_log_probs(_full_precision(student_logits), target, temperature)
    log_bt = _binary_log_probs(_full_precision(teacher_logits), target, temperature)
    kl = F.kl_div(log_bs, log_bt, log_target=True, reduction="batchmean")
    return kl * temperature**2


def nckd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    """Non-target-class KD: ``T^2 * KL(p_hat^T || p_hat^S)``, the non-target classes renormalised, batch mean."""
    _, s_nt = split_target(_full_precision(student_logits), target)
    _, t_nt = split_target(_full_precision(teacher_logits), target)
    log_ps = F.log_softmax(s_nt / temperature, dim=1)
    log_pt = F.log_softmax(t_nt / temperature, dim=1)
    kl = F.kl_div(log_ps, log_pt, log_target=True, reduction="batchmean")
    return kl * temperature**2


def dkd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    target: torch.Tensor,
    alpha: float,
    beta: float,
    temperature: float,
) -> torch.Tensor:
    """``alpha * TCKD + beta * NCKD``, the DKD objective."""
    return alpha * tckd(student_logits, teacher_logits, target, temperature) + beta * nckd(student_logits, teacher_logits, target, temperature)


def warmup_factor(progress: float, warmup: float) -> float:
    """Linear ramp of the loss weight: ``min(progress / warmup, 1)``; 1 when ``warmup`` is 0."""
    return 1.0 if warmup <= 0 else min(progress / warmup, 1.0)


class DKD(Method):
    """Decoupled KD: target-class and non-target-class KD terms weighted separately (alpha, beta)."""

    name = "dkd"
    version = 1
    family = "distillation"
    needs_teacher = True
    uses_target = True

    @dataclass(frozen=True)
    class Hparams:
        weight: float = field(default=1.0, metadata={"search": (0.1, 10.0, "log")})
        alpha: float = field(default=1.0, metadata={"search": (0.25, 4.0, "log")})
        beta: float = field(default=8.0, metadata={"search": (1.0, 16.0, "log")})
        temperature: float = field(default=4.0, metadata={"search": (1.0, 8.0)})
        warmup: float = field(default=20 / 240, metadata={"search": (0.0, 0.5)})
        domains: str = domains_field()

        def __post_init__(self) -> None:
            check_non_negative(weight=self.weight)
            check_non_negative(alpha=self.alpha)
            check_non_negative(beta=self.beta)
            check_positive(temperature=self.temperature)
            if not 0.0 <= self.warmup < 1.0:
                raise ValueError(f"warmup is a fraction of training in [0, 1), got {self.warmup}")
            check_domains(self.domains)

    def __init__(self, hparams: DKD.Hparams, info: MethodInfo) -> None:
        super().__init__(hparams, info)
        if info.num_classes < 2:
            raise ValueError(f"dkd needs at least 2 classes (a target and a non-target), got {info.num_classes}")

    def loss(self, step: Step) -> dict[str, torch.Tensor]:
        hp = self.hparams
        scale = hp.weight * warmup_factor(step.progress, hp.warmup)
        terms = {}
        for domain in DOMAINS[hp.domains]:
            student, teacher = step.student(domain).logits, step.teacher(domain).logits
            target = target_classes(domain, step.batch(domain), teacher)
            terms[f"tckd_{domain}"] = scale * hp.alpha * tckd(student, teacher, target, hp.temperature)
            terms[f"nckd_{domain}"] = scale * hp.beta * nckd(student, teacher, target, hp.temperature)
        return terms


@hookimpl
def cdkd_register_methods(register: RegisterMethods) -> None:
    register(DKD)
