"""Zagoruyko & Komodakis 2017, "Paying More Attention to Attention". https://arxiv.org/abs/1612.03928

Activation-based attention transfer. A stage's map A (C, H, W) becomes the spatial
attention map F(A) = sum over channels of |A_c|^p (the paper's F^p_sum, p = 2), flattened
to Q and L2-normalised per sample. The paper's eq. 2 adds, for each chosen stage j,

    beta/2 * || Q_s^j / ||Q_s^j||_2 - Q_t^j / ||Q_t^j||_2 ||_2

What this component computes, per domain batch::

    loss = weight/2 * sum over stages (-3, -2, -1) of mean over the batch of ||q_s - q_t||_2

* ``weight`` is the paper's beta. Followed: the paper's formula, the *unsquared* L2 norm of
  the difference per example (its ||.||_p with p = 2), averaged over the batch. The reference
  code (attention-transfer, RepDistiller, mdistiller) instead takes the mean over batch and
  positions of the *squared* difference, ``(at(x) - at(y)).pow(2).mean()``, which is why its
  beta is 1000: that mean divides by H*W, and the paper says its beta of 10^3 is "divided by
  the number of elements in attention map and batch size". With the paper's per-example norm
  there is no such division, each stage's term lies in [0, weight] (two unit vectors are at
  most 2 apart), and the default weight = 2 makes the term exactly the sum over stages of the
  mean distance, which matches the reference's pull at its CIFAR operating point
  (500 * d^2 / (H*W) for 32^2, 16^2 and 8^2 maps at a distance d ~ 0.2 is ~0.4, ours 0.6).
  The norm's gradient at a zero difference is taken as zero (PyTorch's subgradient).
* ``p`` is the exponent of the attention map (at least 1: below, |A|^p has an infinite
  gradient at A = 0; the paper tries 1, 2 and 4); the difference is always measured in L2, as in
  every experiment of the paper. The reference code averages over channels instead of
  summing; the L2 normalisation makes the two identical.
* Spatial mismatch (a ViT's 8x8 tokens against a ResNet's 2x2 map): the unnormalised
  attention map F(A) of the larger network is average-pooled to the smaller spatial size
  before it is flattened and normalised into Q (RepDistiller pools the activations A
  instead; pooling F(A), which is non-negative, keeps each region's attention mass, where
  pooling a signed A first would let activations of opposite sign cancel). Channel counts
  never need to match: F sums them away.
* The same stage indices (-3, -2, -1: the last three stages, the paper's "group" outputs)
  are read from both networks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from cdkd_bench import Method, RegisterMethods, Step, hookimpl

from .common import DOMAINS, check_domains, check_non_negative, domains_field


def attention_map(activations: torch.Tensor, p: float) -> torch.Tensor:
    """F^p_sum(A) = sum_c |A_c|^p: (N, C, H, W) -> (N, H, W), not normalised."""
    return activations.float().abs().pow(p).sum(dim=1)


def attention_vector(attention: torch.Tensor) -> torch.Tensor:
    """Q / ||Q||_2: (N, H, W) attention maps flattened and L2-normalised per sample."""
    return F.normalize(attention.flatten(1), p=2, dim=1)


def at_distance(student_map: torch.Tensor, teacher_map: torch.Tensor, p: float) -> torch.Tensor:
    """Mean over the batch of ||Q_s/||Q_s|| - Q_t/||Q_t||||_2 for one stage (any channels, any sizes)."""
    q_s, q_t = attention_map(student_map, p), attention_map(teacher_map, p)
    size = (min(q_s.shape[-2], q_t.shape[-2]), min(q_s.shape[-1], q_t.shape[-1]))
    if tuple(q_s.shape[-2:]) != size:
        q_s = F.adaptive_avg_pool2d(q_s.unsqueeze(1), size).squeeze(1)
    if tuple(q_t.shape[-2:]) != size:
        q_t = F.adaptive_avg_pool2d(q_t.unsqueeze(1), size).squeeze(1)
    diff = attention_vector(q_s) - attention_vector(q_t)
    return torch.linalg.vector_norm(diff, ord=2, dim=1).mean()


class AT(Method):
    """Attention transfer: match the L2-normalised spatial attention maps of the last three stages."""

    name = "at"
    version = 1
    family = "distillation"
    needs_teacher = True
    uses_target = True
    intermediates = (-3, -2, -1)

    @dataclass(frozen=True)
    class Hparams:
        weight: float = field(default=2.0, metadata={"search": (0.1, 100.0, "log")})
        p: float = field(default=2.0, metadata={"search": (1.0, 4.0)})
        domains: str = domains_field()

        def __post_init__(self) -> None:
            check_non_negative(weight=self.weight)
            if not self.p >= 1:
                raise ValueError(f"p must be at least 1 (|A|^p has no finite gradient at 0 below), got {self.p}")
            check_domains(self.domains)

    def loss(self, step: Step) -> dict[str, torch.Tensor]:
        hp = self.hparams
        terms = {}
        for domain in DOMAINS[hp.domains]:
            student, teacher = step.student(domain), step.teacher(domain)
            total = sum(at_distance(student.stage(s), teacher.stage(s).detach(), hp.p) for s in self.intermediates)
            terms[f"at_{domain}"] = hp.weight / 2 * total
        return terms


@hookimpl
def cdkd_register_methods(register: RegisterMethods) -> None:
    register(AT)
