"""Sun & Saenko 2016, "Deep CORAL: Correlation Alignment for Deep Domain Adaptation", ECCV 2016 Workshops
(TASK-CV). https://arxiv.org/abs/1607.01719

Deep CORAL aligns the second-order statistics of the source and target batches: the loss is
L = ‖C_S − C_T‖²_F / (4 d²), with C = (XᵀX − (1ᵀX)ᵀ(1ᵀX) / n) / (n − 1) the unbiased covariance of a batch
X (n, d) and d the layer's width. Each domain's covariance is taken over its own batch, so the two batches
may differ in size (each needs two examples or more). The covariance is computed from the centred batch,
(X − mean)ᵀ(X − mean) / (n − 1), which equals the paper's formula but does not lose precision to
cancellation, in float32 outside autocast. The paper applies the loss to the last layer (fc8, the class
scores), which is the default here (``layer = "logits"``); the pooled pre-logit features are the other
choice. Gradients flow into both the source and the target batch, as in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from cdkd_bench import Method, RegisterMethods, Step, hookimpl

from .common import check_non_negative, weight_field

LAYERS = ("logits", "features")
"""Which of the student's outputs the covariances are taken of, by the ``layer`` hparam."""


def covariance(batch: torch.Tensor) -> torch.Tensor:
    """The unbiased (d, d) covariance of the rows of a (n, d) batch, n >= 2, in float32 (or float64)."""
    if batch.dim() != 2 or len(batch) < 2:
        raise ValueError(f"CORAL needs a (n, d) batch of at least two examples per domain, got shape {tuple(batch.shape)}")
    with torch.autocast(device_type=batch.device.type, enabled=False):
        x = batch if batch.dtype == torch.float64 else batch.float()
        centred = x - x.mean(dim=0, keepdim=True)
        return centred.T @ centred / (len(batch) - 1)


def coral_loss(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """‖C_S − C_T‖²_F / (4 d²) between a source batch (n_s, d) and a target batch (n_t, d)."""
    if source.shape[1:] != target.shape[1:]:
        raise ValueError(f"source and target widths differ: {tuple(source.shape)} and {tuple(target.shape)}")
    d = source.shape[1]
    return (covariance(source) - covariance(target)).pow(2).sum() / (4.0 * d * d)


class CORAL(Method):
    """Deep CORAL: match the covariances of the source and target batches' logits (or features)."""

    name = "coral"
    version = 1
    family = "adaptation"
    uses_target = True
    needs_teacher = False

    @dataclass(frozen=True)
    class Hparams:
        weight: float = weight_field(1.0)
        layer: str = field(default="logits", metadata={"search": LAYERS})

        def __post_init__(self) -> None:
            check_non_negative(weight=self.weight)
            if self.layer not in LAYERS:
                raise ValueError(f"layer must be one of {', '.join(LAYERS)}, got {self.layer!r}")

    def loss(self, step: Step) -> dict[str, torch.Tensor]:
        hp = self.hparams
        source = getattr(step.student("source"), hp.layer)
        target = getattr(step.student("target"), hp.layer)
        return {"coral": hp.weight * coral_loss(source, target)}


@hookimpl
def cdkd_register_methods(register: RegisterMethods) -> None:
    register(CORAL)
