"""Cui et al. 2020, "Towards Discriminability and Diversity: Batch Nuclear-norm Maximization under Label
Insufficient Situations" (CVPR 2020). https://arxiv.org/abs/2003.12237

BNM maximises the nuclear norm (the sum of singular values) of the B x C matrix of target
predictions ``A = softmax(Z_t)``: a large Frobenius norm means confident rows (discriminability)
and a large rank means many classes are predicted (diversity), and the nuclear norm bounds and
rewards both. The loss is the paper's ``-||A||_* / B``. (The authors' code averages the singular
values instead, dividing by ``min(B, C)``; for a fixed batch size that is a constant factor that
the weight absorbs.) The singular values come from ``torch.linalg.svdvals`` in float32, whose
gradient is ``U V^T`` and stays well defined when singular values repeat. The paper uses a weight of
1 for domain adaptation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cdkd_bench import Method, RegisterMethods, Step, hookimpl

from .common import check_non_negative, weight_field


def batch_nuclear_norm_loss(logits: torch.Tensor) -> torch.Tensor:
    """``-||softmax(logits)||_* / B`` for a (B, C) batch of logits."""
    probabilities = logits.float().softmax(dim=1)
    return -torch.linalg.svdvals(probabilities).sum() / len(logits)


class BNM(Method):
    """Batch nuclear-norm maximisation: confident and diverse target predictions."""

    name = "bnm"
    version = 1
    family = "adaptation"
    uses_target = True
    needs_teacher = False

    @dataclass(frozen=True)
    class Hparams:
        weight: float = weight_field(1.0)

        def __post_init__(self) -> None:
            check_non_negative(weight=self.weight)

    def loss(self, step: Step) -> dict[str, torch.Tensor]:
        return {"bnm": self.hparams.weight * batch_nuclear_norm_loss(step.student("target").logits)}


@hookimpl
def cdkd_register_methods(register: RegisterMethods) -> None:
    register(BNM)
