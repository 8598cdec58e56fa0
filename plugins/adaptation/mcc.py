"""Jin et al. 2020, "Minimum Class Confusion for Versatile Domain Adaptation" (ECCV 2020). https://arxiv.org/abs/1912.03699

MCC penalises the target batch's *class confusion*: how often the classifier's predictions put
mass on two classes at once. With ``Y = softmax(Z_t / T)`` (B x C, temperature-scaled), per-example
entropies ``H_i`` and uncertainty weights ``W_ii = B (1 + exp(-H_i)) / sum_j (1 + exp(-H_j))`` (confident
examples count more), the class correlation is ``C = Y^T W Y`` (C x C); each column is normalised by
its sum (``C~_jj' = C_jj' / sum_j'' C_j''j'``, the paper's category normalisation, which keeps
frequent classes from dominating), and the loss is the off-diagonal mass ``sum_{j != j'} |C~_jj'| / C``.
All entries are non-negative, so the absolute value is a no-op. The entropy weights are detached,
as in the authors' reference code (and the Transfer-Learning-Library version): they re-weight the
examples but the gradient flows only through the predictions in ``Y^T W Y``. The paper's default
temperature is 2.5 and its trade-off weight 1.0; both are hparams here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from cdkd_bench import Method, RegisterMethods, Step, hookimpl

from .common import check_non_negative, check_positive, entropy, weight_field


def class_confusion(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """The MCC loss of a (B, C) batch of target logits (see the module docstring)."""
    batch, num_classes = logits.shape
    probabilities = (logits.float() / temperature).softmax(dim=1)
    certainty = 1.0 + torch.exp(-entropy(probabilities).detach())
    weights = batch * certainty / certainty.sum()
    correlation = (probabilities * weights[:, None]).t() @ probabilities
    normalised = correlation / correlation.sum(dim=0, keepdim=True)
    return (normalised.sum() - normalised.trace()) / num_classes


class MCC(Method):
    """Minimum class confusion: shrink the cross-class correlation of the target predictions."""

    name = "mcc"
    version = 1
    family = "adaptation"
    uses_target = True
    needs_teacher = False

    @dataclass(frozen=True)
    class Hparams:
        weight: float = weight_field(1.0)
        temperature: float = field(default=2.5, metadata={"search": (1.0, 5.0)})

        def __post_init__(self) -> None:
            check_non_negative(weight=self.weight)
            check_positive(temperature=self.temperature)

    def loss(self, step: Step) -> dict[str, torch.Tensor]:
        value = class_confusion(step.student("target").logits, self.hparams.temperature)
        return {"mcc": self.hparams.weight * value}


@hookimpl
def cdkd_register_methods(register: RegisterMethods) -> None:
    register(MCC)
