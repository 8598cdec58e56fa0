"""Tung & Mori 2019, "Similarity-Preserving Knowledge Distillation". https://arxiv.org/abs/1907.09682

Inputs that the teacher finds similar should be similar to the student too. For a batch of
b images and a stage's activation map flattened per image, A (b x c*h*w), the similarity
matrix is G = A A^T (b x b), row-wise L2-normalised: G~[i] = G[i] / ||G[i]||_2 (the paper's
eq. 2 and 3). The loss (eq. 4) is

    L_SP = 1/b^2 * sum over chosen stage pairs of || G~_t - G~_s ||_F^2

What this component computes, per domain batch::

    loss = weight * 1/b^2 * sum over stages (-1,) of ||G~_t - G~_s||_F^2

* Exactly the paper's normalisation (the sum of squared entries divided by b^2, which is
  also what the reference code does), so ``weight`` is the paper's gamma and its default is
  the paper's CIFAR-10 value, 3000.
* The paper pairs a teacher layer with the student layer at the same depth, the end of a
  group; its CIFAR experiments use the last group. Here: the last stage of each network
  (``intermediates = (-1,)``; a subclass may list more stages, each paired by index).
* Channels and spatial sizes never need to match: G is b x b whatever the map's shape, so a
  ViT student's 192 x 8 x 8 tokens compare with a ResNet teacher's 128 x 2 x 2 map as is.
* The Gram matrices are computed in float32 with autocast disabled: each entry sums c*h*w
  products, too many for bfloat16's 8-bit mantissa.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from cdkd_bench import Method, RegisterMethods, Step, hookimpl

from .common import DOMAINS, check_domains, check_non_negative, domains_field


def similarity_matrix(activations: torch.Tensor) -> torch.Tensor:
    """G~ = row-wise L2-normalised A A^T, with A the (b, ...) activations flattened per sample."""
    flat = activations.float().flatten(1)
    with torch.autocast(device_type=flat.device.type, enabled=False):  # a bfloat16 Gram is too coarse
        return F.normalize(flat @ flat.t(), p=2, dim=1)


def sp_loss(student_map: torch.Tensor, teacher_map: torch.Tensor) -> torch.Tensor:
    """1/b^2 * ||G~_t - G~_s||_F^2 for one pair of maps from the same b images."""
    b = student_map.shape[0]
    if teacher_map.shape[0] != b:
        raise ValueError(f"student and teacher maps hold different batch sizes: {b} and {teacher_map.shape[0]}")
    diff = similarity_matrix(teacher_map) - similarity_matrix(student_map)
    return diff.pow(2).sum() / (b * b)


class SP(Method):
    """Similarity-preserving KD: match the batch's normalised pairwise-similarity matrices."""

    name = "sp"
    version = 1
    family = "distillation"
    needs_teacher = True
    uses_target = True
    intermediates = (-1,)

    @dataclass(frozen=True)
    class Hparams:
        weight: float = field(default=3000.0, metadata={"search": (10.0, 100000.0, "log")})
        domains: str = domains_field()

        def __post_init__(self) -> None:
            check_non_negative(weight=self.weight)
            check_domains(self.domains)

    def loss(self, step: Step) -> dict[str, torch.Tensor]:
        hp = self.hparams
        terms = {}
        for domain in DOMAINS[hp.domains]:
            student, teacher = step.student(domain), step.teacher(domain)
            total = sum(sp_loss(student.stage(s), teacher.stage(s).detach()) for s in self.intermediates)
            terms[f"sp_{domain}"] = hp.weight * total
        return terms


@hookimpl
def cdkd_register_methods(register: RegisterMethods) -> None:
    register(SP)
