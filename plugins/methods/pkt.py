"""Passalis & Tefas 2018, "Learning Deep Representations with Probabilistic Knowledge Transfer".
https://arxiv.org/abs/1803.10837

PKT matches how the samples of a batch are arranged around each other rather than the
features themselves, so the student's and teacher's pooled features may have different sizes
and no projector is needed. With the cosine kernel K(a, b) = (cos(a, b) + 1) / 2 in [0, 1],
each sample i defines a conditional distribution over the other samples of the batch,

    p_{j|i} = K(x_i, x_j) / sum_{k != i} K(x_i, x_k),   j != i,

for the teacher (p) and the student (q), and the loss is the paper's sum over all pairs

    L = sum_i sum_{j != i} p_{j|i} log(p_{j|i} / q_{j|i}),

that is sum_i KL(P_i || Q_i), the teacher's distribution first (the paper's objective
with the cosine-similarity kernel).

Paper versus the authors' reference code (``cosine_similarity_loss`` in passalis/
probabilistic_kt, also used by RepDistiller and torchdistill): the code keeps the self-
similarity K(x_i, x_i) = 1 in each row and takes the mean over all N^2 entries, i.e. about
(1/N^2) times the loss above. We follow the paper: the diagonal is excluded and the pairs are
summed (so the term grows with the batch size; the weight absorbs it at a fixed budget).
``EPS`` (1e-7, as in the reference) guards the feature normalisation, the row sums and the
ratio inside the logarithm; it is a numerical constant, not an hparam.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from cdkd_bench import Method, RegisterMethods, Step, hookimpl

from .common import DOMAINS, check_domains, check_non_negative, domains_field

EPS = 1e-7


def cosine_conditional(features: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """The (N, N) matrix P[i, j] = p_{j|i} of the cosine kernel, zero on the diagonal, rows summing to 1."""
    unit = features / (features.norm(dim=1, keepdim=True) + eps)
    kernel = (unit @ unit.t() + 1.0) / 2.0
    off_diagonal = ~torch.eye(len(features), dtype=torch.bool, device=features.device)
    kernel = kernel * off_diagonal
    return kernel / (kernel.sum(dim=1, keepdim=True) + eps)


def pkt_loss(student_features: torch.Tensor, teacher_features: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """sum_i sum_{j != i} p_{j|i} log(p_{j|i} / q_{j|i}); p from the teacher, q from the student.

    The features may have different sizes (N, D_s) and (N, D_t); only the batch size must agree.
    """
    if student_features.shape[0] != teacher_features.shape[0]:
        raise ValueError(f"student and teacher batches differ: {student_features.shape[0]} vs {teacher_features.shape[0]}")
    if student_features.shape[0] < 2:  # no pairs: no term, but keep the graph
        return student_features.sum() * 0.0
    with torch.autocast(device_type=student_features.device.type, enabled=False):
        q = cosine_conditional(student_features.float(), eps)
        p = cosine_conditional(teacher_features.float(), eps)
        return (p * torch.log((p + eps) / (q + eps))).sum()


class PKT(Method):
    """PKT: match the teacher's cosine-kernel conditional distributions over the batch (pooled features)."""

    name = "pkt"
    version = 1
    family = "distillation"
    needs_teacher = True
    uses_target = True

    @dataclass(frozen=True)
    class Hparams:
        weight: float = field(default=1.0, metadata={"search": (0.1, 100.0, "log")})
        domains: str = domains_field()

        def __post_init__(self) -> None:
            check_non_negative(weight=self.weight)
            check_domains(self.domains)

    def loss(self, step: Step) -> dict[str, torch.Tensor]:
        hp = self.hparams
        terms = {}
        for domain in DOMAINS[hp.domains]:
            value = pkt_loss(step.student(domain).features, step.teacher(domain).features)
            terms[f"pkt_{domain}"] = hp.weight * value
        return terms


@hookimpl
def cdkd_register_methods(register: RegisterMethods) -> None:
    register(PKT)
