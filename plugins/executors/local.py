"""Runs the grid's jobs one after another in this process."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from cdkd_bench import Executor, Job, Ready, hookimpl, run_job


class LocalExecutor(Executor):
    """One job at a time, in order, in the calling process (the default)."""

    name = "local"
    default = True

    def run(self, jobs: list[Job], on_result: Callable[[int, Mapping[str, Any]], None], ready: Ready | None = None) -> None:
        for index, job in enumerate(jobs):
            instead = ready(index) if ready is not None else None
            on_result(index, instead if instead is not None else run_job(job))


@hookimpl
def cdkd_register_executors(register):  # type: ignore[no-untyped-def]
    register(LocalExecutor)
