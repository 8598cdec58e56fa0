"""cdkd-bench: a benchmark suite for cross-domain knowledge distillation.

This module is the whole public API for plugin authors.

Importing it does not import torch: the declarations (suites, domains, budgets, selection
rules, executors, jobs) are plain Python, and the tensor-bound names (``Method``, ``Step``,
``Batch``, …) are looked up in :mod:`cdkd_bench.api` on first use, so that commands which
never train (``--help``, ``leaderboard``, ``list suites``) start in a fraction of torch's
import time.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import pluggy

from cdkd_bench.declarations import (
    Augmentation,
    Budget,
    DataContext,
    Domain,
    DomainFiles,
    Executor,
    ImageFiles,
    Job,
    PublishedResult,
    Ready,
    RunJob,
    Selector,
    Suite,
    Task,
)
from cdkd_bench.errors import UserError
from cdkd_bench.registration import RegisterDomains, RegisterExecutors, RegisterMethods, RegisterSelectors, RegisterSuites

if TYPE_CHECKING:
    from cdkd_bench.api import Batch, DomainData, Method, MethodInfo, Outputs, Step

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("cdkd_bench")
"""Marker for plugin hook implementations: ``@cdkd_bench.hookimpl``."""

__all__ = [
    "Augmentation",
    "Batch",
    "Budget",
    "DataContext",
    "Domain",
    "DomainFiles",
    "DomainData",
    "Executor",
    "ImageFiles",
    "PublishedResult",
    "Job",
    "Method",
    "MethodInfo",
    "Outputs",
    "Ready",
    "RegisterDomains",
    "RegisterExecutors",
    "RegisterMethods",
    "RegisterSelectors",
    "RegisterSuites",
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

# Public names whose definitions need torch, and the module that defines them.
_TORCH_BOUND = {name: "cdkd_bench.api" for name in ("Batch", "DomainData", "Method", "MethodInfo", "Outputs", "Step")}


def __getattr__(name: str) -> Any:
    """Resolve a torch-bound public name on first use (PEP 562), then keep it as a plain attribute."""
    if name not in _TORCH_BOUND:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_TORCH_BOUND[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_TORCH_BOUND))


def run_job(job: Job) -> dict[str, Any]:
    """Run one grid job (a teacher or a student run) in this process; never raises."""
    from cdkd_bench.jobs import run_job as run

    return run(job)
