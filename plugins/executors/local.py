"""Runs the grid's jobs one after another in this process."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from cdkd_bench import Executor, RunJob, hookimpl


class LocalExecutor(Executor):
    """One job at a time, in order, in the calling process (the default)."""

    name = "local"

    def run(self, jobs: list[RunJob], on_result: Callable[[int, Mapping[str, Any]], None]) -> None:
        for index, job in enumerate(jobs):
            on_result(index, job())


@hookimpl
def cdkd_register_executors(register):  # type: ignore[no-untyped-def]
    register(LocalExecutor)
