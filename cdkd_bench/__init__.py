"""cdkd-bench: a benchmark suite for cross-domain knowledge distillation.

This module is the whole public API for plugin authors.
"""

from __future__ import annotations

from typing import Any

import pluggy

from cdkd_bench.api import (
    Augmentation,
    Batch,
    Budget,
    DataContext,
    Domain,
    DomainData,
    Executor,
    Job,
    Method,
    MethodInfo,
    Outputs,
    Ready,
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
    "Job",
    "Method",
    "MethodInfo",
    "Outputs",
    "Ready",
    "RunJob",
    "Selector",
    "Step",
    "Suite",
    "Task",
    "UserError",
    "__version__",
    "hookimpl",
    "run_job",
]


def run_job(job: Job) -> dict[str, Any]:
    """Run one grid job (a teacher or a student run) in this process; never raises."""
    from cdkd_bench.jobs import run_job as run

    return run(job)
