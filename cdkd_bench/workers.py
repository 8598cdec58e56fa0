"""Runs a grid's jobs on a pool of worker processes, or one by one in this process.

Jobs may name earlier jobs they need (``Job.after``: a student run needs its teacher
cached). A job starts as soon as everything it needs has reported, in list order among
those that may start: the grid lists teachers first and the longest runs next, so the
pool is never idle behind one teacher while other work could go on.

Each worker is a fresh interpreter (``spawn``) that runs one job at a time with
``run_job``; a worker that dies (killed, out of memory, a crash in native code) fails only
the job it was running, and a new worker takes its place.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
from collections.abc import Callable, Mapping
from multiprocessing.connection import Connection, wait
from typing import Any

from cdkd_bench.api import Job, Ready

OnResult = Callable[[int, Mapping[str, Any]], None]


class Schedule:
    """Which job may start next: all of its ``after`` jobs reported, earliest in the list first."""

    def __init__(self, jobs: list[Job]) -> None:
        for index, job in enumerate(jobs):
            for needed in getattr(job, "after", ()):
                if not 0 <= needed < len(jobs) or needed == index:
                    raise ValueError(f"job {index} waits for job {needed}, which is not another job of this list")
        self.jobs = jobs
        self.waiting = list(range(len(jobs)))
        self.reported: set[int] = set()

    def next_startable(self) -> int | None:
        for position, index in enumerate(self.waiting):
            if all(needed in self.reported for needed in getattr(self.jobs[index], "after", ())):
                return self.waiting.pop(position)
        return None

    def report(self, index: int) -> None:
        self.reported.add(index)

    @property
    def finished(self) -> bool:
        return not self.waiting


def start_or_report(schedule: Schedule, index: int, ready: Ready | None, on_result: OnResult) -> bool:
    """Ask ``ready`` whether the job still runs; if it returns a result instead, report it. True: start it."""
    instead = ready(index) if ready is not None else None
    if instead is None:
        return True
    schedule.report(index)
    on_result(index, instead)
    return False


def run_in_this_process(jobs: list[Job], on_result: OnResult, ready: Ready | None, run: Callable[[Job], Mapping[str, Any]]) -> None:
    """One job at a time in the calling process, in dependency order."""
    schedule = Schedule(jobs)
    while not schedule.finished:
        index = schedule.next_startable()
        if index is None:
            raise ValueError("the jobs' `after` lists form a cycle; no job can start")
        if start_or_report(schedule, index, ready, on_result):
            result = run(jobs[index])
            schedule.report(index)
            on_result(index, result)


def _serve(connection: Connection, threads: int, gpu: int | None = None) -> None:
    """A worker's loop: receive a job, send back its result, until told to stop (None)."""
    # Before torch is imported, so its thread pools are sized once, for this worker alone.
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = str(threads)
    if gpu is not None:  # this worker's runs go to one GPU, which it sees as `cuda`
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    from cdkd_bench.jobs import run_job

    while True:
        try:
            job = connection.recv()
        except EOFError:  # the grid process is gone
            return
        if job is None:
            return
        connection.send(run_job(job))


class _Worker:
    def __init__(self, context: Any, threads: int, gpu: int | None = None) -> None:
        self.connection, child = context.Pipe()
        self.gpu = gpu
        self.process = context.Process(target=_serve, args=(child, threads, gpu), daemon=True)
        self.process.start()
        child.close()
        self.job: int | None = None

    def stop(self) -> None:
        try:
            self.connection.send(None)
        except (BrokenPipeError, OSError):
            pass
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join()


def run_on_workers(jobs: list[Job], on_result: OnResult, ready: Ready | None, workers: int) -> None:
    """Run ``jobs`` on up to ``workers`` processes, reporting each result as it arrives."""
    schedule = Schedule(jobs)
    context = multiprocessing.get_context("spawn")
    threads = max((_threads(job.settings) for job in jobs), default=1)
    pool: list[_Worker] = []
    try:
        while not schedule.finished or any(w.job is not None for w in pool):
            _fill(pool, schedule, jobs, on_result, ready, workers, context, threads)
            busy = [w for w in pool if w.job is not None]
            if not busy:
                if schedule.finished:
                    break
                raise ValueError("the jobs' `after` lists form a cycle; no job can start")
            by_handle: dict[Any, _Worker] = {}
            for worker in busy:
                by_handle[worker.connection] = worker
                by_handle[worker.process.sentinel] = worker
            for handle in wait(list(by_handle)):
                worker = by_handle[handle]
                if worker.job is None:  # already handled through its other handle
                    continue
                index, worker.job = worker.job, None
                result = _receive(worker)
                if result is None:  # the process died mid-job: replace it
                    pool.remove(worker)
                    code = worker.process.exitcode
                    result = {"status": "failed", "error": f"its worker process died (exit code {code}) while running it",
                              "traceback": None, "timings": {}}
                schedule.report(index)
                on_result(index, result)
    finally:
        for worker in pool:
            if worker.job is not None:  # interrupted: do not wait for a job nobody will record
                worker.process.terminate()
            worker.stop()


def _threads(settings: Any) -> int:
    resolve = getattr(settings, "resolved_threads", None)
    return int(resolve()) if callable(resolve) else 1


def _receive(worker: _Worker) -> Mapping[str, Any] | None:
    try:
        if worker.connection.poll():
            return worker.connection.recv()  # type: ignore[no-any-return]
    except (EOFError, OSError):
        pass
    worker.process.join(timeout=5)
    return None


def _fill(pool: list[_Worker], schedule: Schedule, jobs: list[Job], on_result: OnResult, ready: Ready | None, workers: int,
          context: Any, threads: int) -> None:
    """Give every idle worker (starting new ones up to ``workers``) the next job that may start."""
    while True:
        idle = next((w for w in pool if w.job is None), None)
        if idle is None and len(pool) >= workers:
            return
        index = schedule.next_startable()
        if index is None:
            return
        if not start_or_report(schedule, index, ready, on_result):
            continue
        # Bars drawn by several processes at once garble a terminal; the grid draws one for all.
        job = dataclasses.replace(jobs[index], settings=_quiet(jobs[index].settings))
        if idle is not None:
            try:
                idle.connection.send(job)
                idle.job = index
                continue
            except (BrokenPipeError, OSError):  # it died while idle
                pool.remove(idle)
        fresh = _Worker(context, threads, _free_gpu(pool, jobs[index].settings))
        pool.append(fresh)
        fresh.connection.send(job)
        fresh.job = index


def _free_gpu(pool: list[_Worker], settings: Any) -> int | None:
    """The device for a new worker: the GPU fewest live workers are pinned to (None: no pinning)."""
    from cdkd_bench.compute import worker_device

    device = getattr(settings, "device", "cpu")
    slots = [worker_device(slot, device) for slot in range(len(pool) + 1)]
    if slots[-1] is None:
        return None
    used = [w.gpu for w in pool]
    return min(sorted(set(s for s in slots if s is not None)), key=used.count)


def _quiet(settings: Any) -> Any:
    if dataclasses.is_dataclass(settings) and hasattr(settings, "show_progress"):
        return dataclasses.replace(settings, show_progress=False)  # type: ignore[type-var]
    return settings
