"""What the distillation components share: which batches a term is computed on."""

from __future__ import annotations

from dataclasses import field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cdkd_bench.api import DomainRole

DOMAINS: dict[str, tuple[DomainRole, ...]] = {"both": ("source", "target"), "source": ("source",), "target": ("target",)}
"""Under `uda` the target batch is unlabelled: distilling there is how the student learns the target domain."""


def domains_field(default: str = "both") -> Any:
    """The ``domains`` hparam every distillation component has: source, target or both batches."""
    return field(default=default, metadata={"search": tuple(DOMAINS)})


def check_domains(value: str) -> None:
    if value not in DOMAINS:
        raise ValueError(f"domains must be one of {', '.join(DOMAINS)}, got {value!r}")


def check_non_negative(**values: float) -> None:
    """Hparams that may be zero but not negative (weights, mixing coefficients)."""
    for name, value in values.items():
        if value < 0:
            raise ValueError(f"{name} must be zero or positive, got {value}")


def check_positive(**values: float) -> None:
    """Hparams that must be strictly positive (temperatures, scales)."""
    for name, value in values.items():
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value}")
