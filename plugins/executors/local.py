"""Runs the grid's jobs on this machine: on worker processes, or one by one in this process."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from cdkd_bench import Executor, Job, Ready, RegisterExecutors, hookimpl, run_job


class LocalExecutor(Executor):
    """Up to ``settings.workers`` jobs at once on this machine (the default executor).

    The default is one single-threaded run per core on the CPU. With one worker, or when
    the grid's plugins were given in code (a fresh process could not load them), jobs run
    one by one in the calling process.
    """

    name = "local"
    default = True

    def run(self, jobs: list[Job], on_result: Callable[[int, Mapping[str, Any]], None], ready: Ready | None = None) -> None:
        from cdkd_bench.jobs import jobs_need_this_process  # imports the engine (torch): only when jobs run
        from cdkd_bench.workers import run_in_this_process, run_on_workers

        workers = min(len(jobs), max((job.settings.resolved_workers() for job in jobs), default=1))
        if workers <= 1 or jobs_need_this_process():
            run_in_this_process(jobs, on_result, ready, run_job)
        else:
            run_on_workers(jobs, on_result, ready, workers)


@hookimpl
def cdkd_register_executors(register: RegisterExecutors) -> None:
    register(LocalExecutor)
