"""Long, Cao, Wang & Jordan 2018, "Conditional Adversarial Domain Adaptation", NeurIPS 2018.
https://arxiv.org/abs/1705.10667

CDAN conditions DANN's domain discriminator on the classifier's predictions: the discriminator reads, through
the gradient reversal layer (same λ schedule as DANN), the multilinear map h = f ⊗ g of the student's pooled
features f (N, D) and its softmax predictions g (N, C), flattened to (N, D·C) in the order d·C + c (the
authors' code flattens g ⊗ f; the order is immaterial to a discriminator whose first layer is linear). As in
the authors' code, g is detached: the adversarial gradient reaches the network through f only. When D·C
exceeds ``max_multilinear_dim`` (4096, the paper's threshold) the randomized multilinear map
(f R_f) ⊙ (g R_g) / √d replaces it, with R_f (D×d) and R_g (C×d) standard Gaussian matrices drawn once from a
generator with a fixed seed, kept as buffers (never trained), d = ``randomized_dim`` (1024 in the paper).
``entropy_conditioning`` is the paper's CDAN+E: each example's cross-entropy is weighted by
w = 1 + exp(−H(g)), the weights of each domain's batch rescaled to sum to its size, so confident predictions
count more. The weights are constants here, as in the paper's objective (the authors' code also sends a
reversed gradient into the predictions through them). The loss, like DANN's, is the mean of the source
batch's (weighted) mean cross-entropy and the target batch's, source labelled 1 and target 0; the
discriminator learns at the student's learning rate times ``discriminator_lr_mult``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from cdkd_bench import Method, MethodInfo, RegisterMethods, Step, hookimpl

from .common import Discriminator, adversarial_coefficient, check_positive, entropy
from .dann import DANN, discriminate

RANDOM_SEED = 0
"""Seed of the generator that draws the randomized multilinear map's fixed matrices (reproducible runs)."""


def multilinear_map(features: torch.Tensor, probabilities: torch.Tensor) -> torch.Tensor:
    """h = f ⊗ g for each example: (N, D) and (N, C) give (N, D·C), column d·C + c = f_d g_c; g is detached."""
    g = probabilities.detach().to(features.dtype)
    return (features.unsqueeze(2) * g.unsqueeze(1)).flatten(1)


def randomized_multilinear_map(
    features: torch.Tensor, probabilities: torch.Tensor, feature_matrix: torch.Tensor, prediction_matrix: torch.Tensor,
) -> torch.Tensor:
    """(f R_f) ⊙ (g R_g) / √d with R_f (D, d), R_g (C, d): an unbiased estimate of the inner products of f ⊗ g; g is detached."""
    g = probabilities.detach().to(features.dtype)
    return (features @ feature_matrix) * (g @ prediction_matrix) / math.sqrt(feature_matrix.shape[1])


def entropy_weights(probabilities: torch.Tensor) -> torch.Tensor:
    """CDAN+E's weights w = 1 + exp(−H(g)) of one domain's batch (no gradient), rescaled to sum to the batch size."""
    weights = 1.0 + torch.exp(-entropy(probabilities.detach().float()))
    return weights * (len(weights) / weights.sum())


def conditional_domain_loss(
    source_logits: torch.Tensor, target_logits: torch.Tensor,
    source_weights: torch.Tensor | None = None, target_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """½ (Σ_s w_i ℓ_i / n_s + Σ_t w_j ℓ_j / n_t), ℓ the binary cross-entropy with source labelled 1 and target 0.

    Weights default to 1 (plain CDAN, the same value as DANN's loss).
    """
    source = source_logits.reshape(-1).float()
    target = target_logits.reshape(-1).float()
    source_terms = F.binary_cross_entropy_with_logits(source, torch.ones_like(source), reduction="none")
    target_terms = F.binary_cross_entropy_with_logits(target, torch.zeros_like(target), reduction="none")
    if source_weights is not None:
        source_terms = source_terms * source_weights
    if target_weights is not None:
        target_terms = target_terms * target_weights
    return 0.5 * (source_terms.mean() + target_terms.mean())


class CDAN(Method):
    """CDAN: a gradient-reversed domain discriminator on the features ⊗ predictions multilinear map."""

    name = "cdan"
    version = 1
    family = "adaptation"
    uses_target = True
    needs_teacher = False

    @dataclass(frozen=True)
    class Hparams(DANN.Hparams):
        """DANN's hparams (weight, discriminator width and learning-rate multiplier, λ schedule) and the conditioning's."""

        entropy_conditioning: bool = field(default=False, metadata={"search": (False, True)})
        max_multilinear_dim: int = field(default=4096, metadata={"search": (1024, 4096, 16384)})
        randomized_dim: int = field(default=1024, metadata={"search": (256, 512, 1024, 2048)})

        def __post_init__(self) -> None:
            super().__post_init__()
            for name in ("max_multilinear_dim", "randomized_dim"):
                value = getattr(self, name)
                if not isinstance(value, int) or isinstance(value, bool):
                    raise ValueError(f"{name} must be a whole number, got {value!r}")
            check_positive(max_multilinear_dim=self.max_multilinear_dim, randomized_dim=self.randomized_dim)
            if not isinstance(self.entropy_conditioning, bool):
                raise ValueError(f"entropy_conditioning must be True or False, got {self.entropy_conditioning!r}")

    feature_matrix: torch.Tensor
    prediction_matrix: torch.Tensor

    def __init__(self, hparams: Any, info: MethodInfo) -> None:
        super().__init__(hparams, info)
        full = info.student_features * info.num_classes
        self.randomized = full > hparams.max_multilinear_dim
        if self.randomized:
            generator = torch.Generator().manual_seed(RANDOM_SEED)
            self.register_buffer("feature_matrix", torch.randn(info.student_features, hparams.randomized_dim, generator=generator))
            self.register_buffer("prediction_matrix", torch.randn(info.num_classes, hparams.randomized_dim, generator=generator))
        self.discriminator = Discriminator(hparams.randomized_dim if self.randomized else full, hparams.hidden)

    def condition(self, features: torch.Tensor, probabilities: torch.Tensor) -> torch.Tensor:
        """What the discriminator reads: the multilinear map, or its randomized version when D·C is too large."""
        if self.randomized:
            return randomized_multilinear_map(features, probabilities, self.feature_matrix, self.prediction_matrix)
        return multilinear_map(features, probabilities)

    def loss(self, step: Step) -> dict[str, torch.Tensor]:
        hp = self.hparams
        source, target = step.student("source"), step.student("target")
        source_g = F.softmax(source.logits.detach().float(), dim=1)
        target_g = F.softmax(target.logits.detach().float(), dim=1)
        source_logits, target_logits = discriminate(self.discriminator, self.condition(source.features, source_g),
                                                    self.condition(target.features, target_g),
                                                    adversarial_coefficient(step.progress, hp.gamma))
        if hp.entropy_conditioning:
            value = conditional_domain_loss(source_logits, target_logits, entropy_weights(source_g), entropy_weights(target_g))
        else:
            value = conditional_domain_loss(source_logits, target_logits)
        return {"cdan": hp.weight * value}

    param_groups = DANN.param_groups  # the discriminator at its own learning-rate multiplier


@hookimpl
def cdkd_register_methods(register: RegisterMethods) -> None:
    register(CDAN)
