"""Long, Cao, Wang & Jordan 2015, "Learning Transferable Features with Deep Adaptation Networks", ICML 2015.
https://arxiv.org/abs/1502.02791

DAN pulls the source and target distributions of the student's representations together by minimising their
multi-kernel maximum mean discrepancy (MK-MMD). The kernel is the mean of m Gaussian kernels
k_u(x, y) = exp(−‖x − y‖² / σ_u) with bandwidths σ_u = 2^u σ, u = −(m−1)/2 … (m−1)/2 (``num_kernels`` = m, odd,
default 5: u = −2 … 2), and σ the mean of the joint source+target batch's squared-distance matrix (diagonal
included), detached, recomputed each step. These are exactly TLlib's DAN kernels, exp(−‖x − y‖² / (2 · 2^k σ))
for k = −3 … 1 (its factor 2 shifts the exponents by one); the paper spreads 33 bandwidths from 2^−8 to 2^8 times
the median distance, in steps of 2^½. The kernels have equal weights where the paper learns the mixture β by a quadratic program; and
MMD² is the biased quadratic-time (V-statistic) estimate mean K_ss + mean K_tt − 2 mean K_st, where the
paper uses the unbiased linear-time one (the quadratic estimate has lower variance and the batches are small).
The paper adapts several layers (fc6–fc8); ``layers`` chooses the pooled features alone or the features and
the logits, and the chosen layers' MMD² are summed. Distances are computed in float32 outside autocast.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from cdkd_bench import Method, RegisterMethods, Step, hookimpl

from .common import check_non_negative, weight_field

LAYERS: dict[str, tuple[str, ...]] = {"features": ("features",), "features+logits": ("features", "logits")}
"""Which of the student's outputs are adapted, by the ``layers`` hparam."""

MIN_BANDWIDTH = 1e-12
"""Floor of σ, for a batch whose points all coincide (its MMD² is then 0)."""


def kernel_powers(num_kernels: int) -> tuple[int, ...]:
    """The exponents u of the bandwidths 2^u σ: ``num_kernels`` (odd) integers centred on 0."""
    if num_kernels < 1 or num_kernels % 2 == 0:
        raise ValueError(f"num_kernels must be a positive odd number, got {num_kernels}")
    half = num_kernels // 2
    return tuple(range(-half, half + 1))


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype == torch.float64 else x.float()


def squared_distances(points: torch.Tensor) -> torch.Tensor:
    """The (N, N) matrix of squared Euclidean distances between the rows of ``points``, in float32 (or float64)."""
    with torch.autocast(device_type=points.device.type, enabled=False):
        x = _at_least_float32(points)
        norms = x.pow(2).sum(dim=1)
        return (norms.unsqueeze(1) + norms.unsqueeze(0) - 2.0 * x @ x.T).clamp_min(0.0)


def mean_squared_distance(points: torch.Tensor) -> torch.Tensor:
    """σ: the mean of the squared-distance matrix of ``points`` (all N² ordered pairs, the zero diagonal included)."""
    return squared_distances(points).mean()


def multi_kernel_mmd(source: torch.Tensor, target: torch.Tensor, powers: Sequence[float]) -> torch.Tensor:
    """Biased MK-MMD² between two batches (N_s, D) and (N_t, D), the kernel the mean of exp(−‖x − y‖² / (2^u σ)) over ``powers``.

    σ is the mean squared distance of the joint batch, detached (a bandwidth, not something to optimise).
    """
    if not powers:
        raise ValueError("multi_kernel_mmd needs at least one kernel power")
    with torch.autocast(device_type=source.device.type, enabled=False):
        distances = squared_distances(torch.cat([_at_least_float32(source), _at_least_float32(target)]))
        sigma = distances.detach().mean().clamp_min(MIN_BANDWIDTH)
        kernel = torch.stack([torch.exp(-distances / (2.0**u * sigma)) for u in powers]).mean(dim=0)
        n = len(source)
        return kernel[:n, :n].mean() + kernel[n:, n:].mean() - 2.0 * kernel[:n, n:].mean()


class DAN(Method):
    """DAN: multi-kernel MMD between the source and target batches' features (and optionally logits)."""

    name = "dan"
    version = 1
    family = "adaptation"
    uses_target = True
    needs_teacher = False

    @dataclass(frozen=True)
    class Hparams:
        weight: float = weight_field(1.0)
        num_kernels: int = field(default=5, metadata={"search": (1, 3, 5, 7, 9)})
        layers: str = field(default="features", metadata={"search": tuple(LAYERS)})

        def __post_init__(self) -> None:
            check_non_negative(weight=self.weight)
            if not isinstance(self.num_kernels, int) or isinstance(self.num_kernels, bool):
                raise ValueError(f"num_kernels must be a whole number, got {self.num_kernels!r}")
            kernel_powers(self.num_kernels)
            if self.layers not in LAYERS:
                raise ValueError(f"layers must be one of {', '.join(LAYERS)}, got {self.layers!r}")

    def loss(self, step: Step) -> dict[str, torch.Tensor]:
        hp = self.hparams
        powers = kernel_powers(hp.num_kernels)
        source, target = step.student("source"), step.student("target")
        total: Any = 0.0
        for layer in LAYERS[hp.layers]:
            total = total + multi_kernel_mmd(getattr(source, layer), getattr(target, layer), powers)
        return {"dan": hp.weight * total}


@hookimpl
def cdkd_register_methods(register: RegisterMethods) -> None:
    register(DAN)
