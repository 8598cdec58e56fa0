"""A grid request → run specs → results, skipping runs already done or running elsewhere."""

from __future__ import annotations

import contextlib
import sqlite3
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm

from cdkd_bench.api import Job
from cdkd_bench.cache import sweep_temporary_files
from cdkd_bench.engine import EngineSettings
from cdkd_bench.errors import UserError
from cdkd_bench.jobs import use_host
from cdkd_bench.plan import expand
from cdkd_bench.plugins import Host
from cdkd_bench.request import GridRequest, read_grid_file
from cdkd_bench.spec import RunSpec, TeacherSpec
from cdkd_bench.store import Store
from cdkd_bench.training import progress_disabled

__all__ = ["GridRequest", "GridSummary", "expand", "read_grid_file", "run_grid"]


@dataclass
class GridSummary:
    total: int = 0
    skipped: int = 0
    done: int = 0
    failed: int = 0
    elsewhere: int = 0
    """Runs another process was running (claimed) or finished while this grid ran."""
    teachers_trained: int = 0
    failures: list[tuple[RunSpec, str]] = field(default_factory=list)


def _log_to_stderr(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


class _Observers:
    """Calls observer hooks; a broken observer is named once per hook and never stops the grid."""

    def __init__(self, host: Host, log: Callable[[str], None]) -> None:
        self.host, self.log = host, log
        self.reported: set[tuple[str, str]] = set()

    def __call__(self, hook: str, **kwargs: Any) -> None:
        for plugin, error in self.host.notify(hook, **kwargs):
            if (plugin, hook) not in self.reported:
                self.reported.add((plugin, hook))
                self.log(f"cdkd-bench: warning: plugin {self.host.describe_plugin(plugin)} failed in {hook}: {error} "
                         "(further failures of it in this hook are not shown)")


@contextlib.contextmanager
def _store_failures_stop_the_grid(store: Store, action: str) -> Iterator[None]:
    """A store that cannot be written (disk full, locked for too long) ends the grid with a sentence."""
    try:
        yield
    except sqlite3.Error as exc:
        raise UserError(f"could not {action} in results store {str(store.path)!r} ({exc}); the grid stops here, "
                        "every run recorded before is kept, and running the same grid again continues it") from None


def _claim_before_start(spec: RunSpec, store: Store, observe: _Observers) -> dict[str, Any] | None:
    """Called by the executor just before a run starts: claim it (a second grid on the same store skips it)."""
    with _store_failures_stop_the_grid(store, f"claim run {spec.run_id}"):
        claimed = store.claim(spec.run_id)
    if not claimed:
        return {"status": "elsewhere"}
    observe("cdkd_before_run", spec=spec.to_dict())
    return None


def run_grid(
    host: Host,
    specs: list[RunSpec],
    store: Store,
    settings: EngineSettings,
    executor_name: str | None = None,
    show_progress: bool = True,
    log: Callable[[str], None] = _log_to_stderr,
) -> GridSummary:
    """Run every spec not already done: first the teachers they need, then the students.

    Each result is stored the moment it arrives, so a killed grid resumes where it stopped;
    runs another process on the same store is running are left to it.
    """
    summary = GridSummary(total=len(specs))
    done = store.done_ids()
    pending = [s for s in specs if s.run_id not in done]
    summary.skipped = len(specs) - len(pending)
    if not pending:
        return summary
    executor = host.executors.get(executor_name or host.default("executor"))()
    observe = _Observers(host, log)
    use_host(host)  # jobs run in this process use the grid's host, plugins given in code included
    for folder in ("data", "teachers"):  # leftovers of writers killed between write and rename
        sweep_temporary_files(settings.cache_dir / folder)
    with store.claims_kept_alive():
        teacher_errors = _prepare_teachers(host, pending, settings, executor, summary, show_progress, log)
        # Runs whose teacher failed fail with its error, untried.
        runnable = [s for s in pending if s.teacher.key not in teacher_errors]
        for spec in pending:
            if spec.teacher.key in teacher_errors:
                error = f"its teacher failed: {teacher_errors[spec.teacher.key]}"
                _finish(store, summary, spec, {"status": "failed", "error": error}, log, observe)
        run_bar = tqdm(total=len(runnable), desc="runs", unit="run", disable=progress_disabled(show_progress))

        def on_run(index: int, result: Mapping[str, Any]) -> None:
            _finish(store, summary, runnable[index], dict(result), log, observe)
            run_bar.update()

        executor.run([Job("run", s, settings) for s in runnable], on_run,
                     lambda index: _claim_before_start(runnable[index], store, observe))
        run_bar.close()
    return summary


def _prepare_teachers(
    host: Host, pending: list[RunSpec], settings: EngineSettings, executor: Any, summary: GridSummary,
    show_progress: bool, log: Callable[[str], None],
) -> dict[str, str]:
    """Each distinct teacher once; returns the errors of those that failed, by key.

    A first pass skips teachers another process is training right now (it trains the
    others meanwhile); a second pass waits for those and loads them.
    """
    teachers = list({s.teacher.key: s.teacher for s in pending}.values())
    errors: dict[str, str] = {}
    busy: list[TeacherSpec] = []
    bar = tqdm(total=len(teachers), desc="teachers", unit="teacher", disable=progress_disabled(show_progress))

    def run_pass(batch: list[TeacherSpec], wait: bool) -> None:
        def on_teacher(index: int, result: Mapping[str, Any]) -> None:
            teacher = batch[index]
            if result["status"] != "done":
                errors[teacher.key] = result["error"]
                log(f"teacher {teacher.arch} on {teacher.source} (seed {teacher.seed}) failed: {result['error']}")
            elif result["busy"]:
                busy.append(teacher)
                return
            elif result["teacher_trained"]:
                summary.teachers_trained += 1
                log(f"teacher {teacher.arch} on {teacher.source} (seed {teacher.seed}): "
                    f"source-val acc {result['metrics']['source_val.acc']:.1f}% in {result['metrics']['train_s']:.1f}s")
            bar.update()

        executor.run([Job("teacher", t, settings, wait) for t in batch], on_teacher)

    run_pass(teachers, wait=False)
    if busy:
        log(f"waiting for {len(busy)} teacher(s) that another process is training")
        waiting, busy[:] = list(busy), []
        run_pass(waiting, wait=True)
    bar.close()
    return errors


def _finish(
    store: Store, summary: GridSummary, spec: RunSpec, result: dict[str, Any], log: Callable[[str], None], observe: _Observers
) -> None:
    label = f"{spec.task} {spec.recipe} seed {spec.seed}"
    if result["status"] == "elsewhere":
        summary.elsewhere += 1
        log(f"{label}: another process is running it; skipped")
        return
    with _store_failures_stop_the_grid(store, f"record run {spec.run_id}"):
        recorded = store.record(spec, result)
    if not recorded:
        summary.elsewhere += 1
        log(f"{label}: another process finished it first; its result is kept")
        return
    if result["status"] == "done":
        summary.done += 1
        m = result["metrics"]
        log(f"{label}: target acc {m['target_test.acc']:.1f}% (teacher {m['teacher.target_test.acc']:.1f}%) "
            f"in {result['timings']['total_s']:.1f}s")
    else:
        summary.failed += 1
        summary.failures.append((spec, result["error"]))
        log(f"{label}: FAILED: {result['error']}")
    observe("cdkd_after_run", spec=spec.to_dict(), result=result)
