"""cdkd-bench: a benchmark suite for cross-domain knowledge distillation.

This module is the whole public API for plugin authors.
"""

from __future__ import annotations

import pluggy

from cdkd_bench.api import (
    Augmentation,
    Batch,
    Budget,
    DataContext,
    Domain,
    DomainData,
    Executor,
    Method,
    MethodInfo,
    Outputs,
    RunJob,
    Selector,
    Step,
    Suite,
    Task,
)
from cdkd_bench.errors import UserError

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("cdkd_bench")
"""Marker for plugin hook implementations: ``@cdkd_bench.hookimpl``."""

__all__ = [
    "Augmentation",
    "Batch",
    "Budget",
    "DataContext",
    "Domain",
    "DomainData",
    "Executor",
    "Method",
    "MethodInfo",
    "Outputs",
    "RunJob",
    "Selector",
    "Step",
    "Suite",
    "Task",
    "UserError",
    "__version__",
    "hookimpl",
]
