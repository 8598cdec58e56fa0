"""Grid jobs run by a module-level function, so any process (a worker, a Ray task) can run them."""

from __future__ import annotations

from functools import partial
from typing import Any

from cdkd_bench.api import Job
from cdkd_bench.engine import execute, execute_ensemble, execute_safely
from cdkd_bench.plugins import Host, load_host
from cdkd_bench.teachers import prepare_teacher

_process_host: Host | None = None


def use_host(host: Host) -> None:
    """Run this process's jobs with ``host`` (the grid's own, which may hold plugins given in code)."""
    global _process_host
    _process_host = host


def process_host() -> Host:
    """The plugin host of this process, built from the installed entry points on first use."""
    global _process_host
    if _process_host is None:
        _process_host = load_host()
    return _process_host


def jobs_need_this_process() -> bool:
    """True when the grid's host holds plugins given in code, which a fresh process could not load."""
    return _process_host is not None and any(not info.distribution for info in _process_host.plugins)


def run_job(job: Job) -> dict[str, Any]:
    """Run ``job`` in this process and return its result; failures come back as results, never raised."""
    host = process_host()
    if job.kind == "teacher":
        return execute_safely(partial(prepare_teacher, job.spec, host, job.settings, job.wait))
    if job.kind == "run":
        return execute_safely(partial(execute, job.spec, host, job.settings))
    if job.kind == "ensemble":
        return execute_safely(lambda: {"members": execute_ensemble(job.spec, host, job.settings)})
    return {"status": "failed", "error": f"unknown job kind {job.kind!r}; expected 'teacher', 'run' or 'ensemble'"}
