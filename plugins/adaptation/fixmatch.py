"""Sohn et al. 2020, "FixMatch: Simplifying Semi-Supervised Learning with Consistency and Confidence" (NeurIPS 2020).
https://arxiv.org/abs/2001.07685

FixMatch's unlabelled loss on the target batch: the student's prediction on the weakly augmented
view gives a pseudo-label (its argmax) and a confidence (its maximum probability); where the
confidence reaches ``threshold`` (``>=``, as in the paper's ``1(max(q_b) >= tau)``) the student is
trained to predict that label on the strongly augmented view of the same image. The pseudo-labels
and the mask are computed from detached outputs, so no gradient flows through the weak view. As
in the paper, the masked cross-entropies are averaged over the whole unlabelled batch, not over
the confident images only, so the term grows as more images pass the threshold. The views are the
suite's ``weak`` and ``strong`` augmentations; the two views are separate forward passes (the
paper concatenates labelled, weak and strong images into one batch, which mixes their BatchNorm
statistics). The supervised source term is the engine's. Paper defaults: threshold 0.95, unlabelled
weight ``lambda_u = 1``. The fraction of masked-in images is not returned: every returned term is
added to the loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from cdkd_bench import Method, RegisterMethods, Step, hookimpl

from .common import check_non_negative, check_probability, weight_field


def pseudo_labels(weak_logits: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(labels, mask): the argmax of ``softmax(weak_logits)`` and whether its probability is at least ``threshold``.

    Computed without gradient; the mask is a float tensor of 0s and 1s.
    """
    probabilities = weak_logits.detach().float().softmax(dim=1)
    confidence, labels = probabilities.max(dim=1)
    return labels, (confidence >= threshold).float()


def masked_cross_entropy(strong_logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``mean_b mask_b * CE(strong_b, labels_b)`` over all B images (the paper's normalisation)."""
    return (mask * F.cross_entropy(strong_logits.float(), labels, reduction="none")).mean()


def fixmatch_loss(weak_logits: torch.Tensor, strong_logits: torch.Tensor, threshold: float) -> torch.Tensor:
    """FixMatch's unlabelled loss: pseudo-labels and mask from the weak view, cross-entropy on the strong view."""
    labels, mask = pseudo_labels(weak_logits, threshold)
    return masked_cross_entropy(strong_logits, labels, mask)


class FixMatch(Method):
    """FixMatch: confident weak-view pseudo-labels supervise the strong view of target images."""

    name = "fixmatch"
    version = 1
    family = "adaptation"
    uses_target = True
    needs_teacher = False
    views = {"target": ("weak", "strong")}

    @dataclass(frozen=True)
    class Hparams:
        weight: float = weight_field(1.0)
        threshold: float = field(default=0.95, metadata={"search": (0.7, 0.99)})

        def __post_init__(self) -> None:
            check_non_negative(weight=self.weight)
            check_probability(threshold=self.threshold)

    def loss(self, step: Step) -> dict[str, torch.Tensor]:
        # The pseudo-labels are read off the weak view before the strong view is run (a compiled step may reuse buffers).
        labels, mask = pseudo_labels(step.student("target", "weak").logits, self.hparams.threshold)
        value = masked_cross_entropy(step.student("target", "strong").logits, labels, mask)
        return {"fixmatch": self.hparams.weight * value}


@hookimpl
def cdkd_register_methods(register: RegisterMethods) -> None:
    register(FixMatch)
