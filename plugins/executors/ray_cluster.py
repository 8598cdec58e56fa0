"""Runs the grid's jobs as Ray tasks: on an existing Ray cluster, or on a Ray instance started on this machine.

``CDKD_BENCH_RAY_ADDRESS`` (else Ray's own ``RAY_ADDRESS``) names the cluster to connect to; without
either, a Ray instance with one CPU per concurrent run is started here and shut down when the grid ends.
A process already connected to Ray (``ray.init`` called before the grid) keeps its connection.

Jobs go out in the order and under the rules of the local executor: a job starts only after the jobs it
needs have reported, at most ``workers`` at once, and every result is reported (and stored) by the calling
process alone. Each task builds its plugin host from the installed entry points, so every node needs the
same packages installed, and the cache folder (``cache_dir``: data and teachers) must be one shared
filesystem path that every node sees.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
from collections.abc import Callable, Mapping
from typing import Any

from cdkd_bench import Executor, Job, Ready, RegisterExecutors, UserError, hookimpl, run_job

ADDRESS_ENV = "CDKD_BENCH_RAY_ADDRESS"
CONNECT_TIMEOUT_S = 5.0
"""How long the cluster's address may take to accept a connection before the grid gives up on it."""

OnResult = Callable[[int, Mapping[str, Any]], None]


def run_job_on_ray(job: Job) -> dict[str, Any]:
    """A Ray task's body: ``run_job`` in the Ray worker process (which loads the installed plugins once)."""
    return run_job(job)


class RayExecutor(Executor):
    """Up to ``settings.workers`` jobs at once as Ray tasks, each with ``threads`` CPUs (and one GPU on CUDA)."""

    name = "ray"

    def check(self) -> None:
        address = _address()
        if address and address != "local":  # said first: it is wrong whether or not Ray is installed here
            _check_reachable(address)
        _import_ray()

    def run(self, jobs: list[Job], on_result: OnResult, ready: Ready | None = None) -> None:
        from cdkd_bench.jobs import jobs_need_this_process  # imports the engine (torch): only when jobs run
        from cdkd_bench.workers import Schedule

        if not jobs:
            return
        if jobs_need_this_process():
            raise UserError("the ray executor cannot run plugins given in code, because Ray workers load plugins only from "
                            "installed packages; install them as a package or run this grid with the local executor")
        ray = _import_ray()
        schedule = Schedule(jobs)  # refuses impossible `after` lists before any Ray process starts
        workers = min(len(jobs), max(job.settings.resolved_workers() for job in jobs))
        threads = max(job.settings.resolved_threads() for job in jobs)
        started_here = _connect(ray, cpus=workers * threads)
        try:
            _run_tasks(ray, jobs, schedule, on_result, ready, workers)
        finally:
            if started_here:
                ray.shutdown()


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UserError("the ray executor needs Ray: pip install 'cdkd-bench[ray]'") from None
    return ray


def _address() -> str:
    return (os.environ.get(ADDRESS_ENV) or os.environ.get("RAY_ADDRESS") or "").strip()


def _connect(ray: Any, cpus: int) -> bool:
    """Connect to the cluster the environment names, or start a Ray instance here. True: started here."""
    if ray.is_initialized():
        return False
    address = _address()
    if not address or address == "local":
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        return True
    # Ray keeps retrying an address that does not answer for minutes: find out first, in seconds.
    _check_reachable(address)
    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
        raise UserError(f"could not connect to the Ray cluster at {address!r} ({_one_line(exc)}); check "
                        f"{ADDRESS_ENV} (or RAY_ADDRESS), or unset both to start Ray on this machine") from None
    return False


def _check_reachable(address: str) -> None:
    """Refuse an address whose host and port do not accept a TCP connection within CONNECT_TIMEOUT_S."""
    location = address.split("://", 1)[-1].rstrip("/")
    host, _, port = location.rpartition(":")
    if not host or not port.isdigit():  # "auto" and other forms Ray resolves itself
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or type(exc).__name__)
        raise UserError(f"the Ray cluster at {address!r} does not answer ({reason} within {CONNECT_TIMEOUT_S:.0f} s); "
                        f"check {ADDRESS_ENV} (or RAY_ADDRESS), or unset both to start Ray on this machine") from None


def _run_tasks(ray: Any, jobs: list[Job], schedule: Any, on_result: OnResult, ready: Ready | None, workers: int) -> None:
    """The local executor's scheduling with Ray tasks for worker processes: at most ``workers`` in flight."""
    from cdkd_bench.workers import start_or_report

    # No retries: a job that crashed its worker fails alone, as with the local executor.
    task = ray.remote(max_retries=0)(run_job_on_ray)
    in_flight: dict[Any, int] = {}
    finished = False
    try:
        while not schedule.finished or in_flight:
            while len(in_flight) < workers:
                index = schedule.next_startable()
                if index is None:
                    break
                if start_or_report(schedule, index, ready, on_result):
                    job, gpus = _for_ray(jobs[index])
                    in_flight[task.options(num_cpus=job.settings.resolved_threads(), num_gpus=gpus).remote(job)] = index
            if not in_flight:
                if schedule.finished:
                    break
                raise ValueError("the jobs' `after` lists form a cycle; no job can start")
            done, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in done:
                index = in_flight.pop(ref)
                result = _result(ray, ref)
                schedule.report(index)
                on_result(index, result)
        finished = True
    finally:
        if not finished:  # interrupted: stop the tasks whose results nobody will record
            for ref in in_flight:
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - already finished or gone; nothing else to stop
                    pass


def _for_ray(job: Job) -> tuple[Job, float]:
    """The job as a Ray worker must see it, and the GPUs its task asks for: a fraction of one
    (``1 / runs_per_device``) when several runs share each GPU.

    A job runs on the device kind and with the thread count it was planned for (its specs' ``numerics``),
    whatever the worker's node has or its environment says: ``auto`` becomes ``cpu`` or ``cuda`` here,
    ``cuda:N`` becomes the one GPU Ray gives the task, and the threads are fixed to this process's count.
    Progress bars stay off: the grid draws one for all.
    """
    specs = job.spec if isinstance(job.spec, tuple) else (job.spec,)
    planned = [getattr(spec, "numerics", "") for spec in specs]
    if planned and all(isinstance(numerics, str) and numerics for numerics in planned):
        cuda = any(numerics.startswith("cuda") for numerics in planned)
    else:
        cuda = str(getattr(job.settings, "device", "cpu")).startswith("cuda")
    settings = job.settings
    if dataclasses.is_dataclass(settings) and not isinstance(settings, type):
        changes = {"device": "cuda" if cuda else "cpu", "threads": job.settings.resolved_threads(), "show_progress": False}
        settings = dataclasses.replace(settings, **{name: value for name, value in changes.items() if hasattr(settings, name)})
    share = 1.0 / max(1, int(getattr(job.settings, "runs_per_device", 1)))
    return dataclasses.replace(job, settings=settings), (share if cuda else 0.0)


def _result(ray: Any, ref: Any) -> Mapping[str, Any]:
    """The task's result; a task that died (worker crash, node lost, out of memory) fails its job alone."""
    try:
        return ray.get(ref)  # type: ignore[no-any-return]
    except ray.exceptions.RayError as exc:
        return {"status": "failed", "error": f"its Ray task failed: {_one_line(exc)}", "traceback": None, "timings": {}}


def _one_line(exc: BaseException) -> str:
    """``Type: first line of the message``, of the error a Ray task error wraps when it wraps one."""
    cause = getattr(exc, "cause", None)
    error = cause if isinstance(cause, BaseException) else exc
    first = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


@hookimpl
def cdkd_register_executors(register: RegisterExecutors) -> None:
    register(RayExecutor)
