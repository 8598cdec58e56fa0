"""A grid request → run specs → results, skipping runs already done or running elsewhere."""

from __future__ import annotations

import contextlib
import dataclasses
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
from cdkd_bench.plan import expand, teacher_every_step
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
    failed_before: int = 0
    """Runs that failed in an earlier grid and were left alone (``retry_failed`` runs them again)."""
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
    retry_failed: bool = False,
) -> GridSummary:
    """Run every spec not already done (nor failed before, unless ``retry_failed``): first the teachers
    they need, then the students.

    Each result is stored the moment it arrives, so a killed grid resumes where it stopped;
    runs another process on the same store is running are left to it. A failed run is not
    run again by default: a plugin's bug fails the same way every time.
    """
    summary = GridSummary(total=len(specs))
    done = store.done_ids()
    failed = set() if retry_failed else store.failed_ids()
    pending = [s for s in specs if s.run_id not in done and s.run_id not in failed]
    summary.failed_before = sum(1 for s in specs if s.run_id in failed)
    summary.skipped = len(specs) - len(pending) - summary.failed_before
    if not pending:
        return summary
    executor = host.executors.get(executor_name or host.default("executor"))()
    observe = _Observers(host, log)
    use_host(host)  # jobs run in this process use the grid's host, plugins given in code included
    for folder in ("data", "teachers"):  # leftovers of writers killed between write and rename
        sweep_temporary_files(settings.cache_dir / folder)
    with store.claims_kept_alive():
        _run_pipelined(host, pending, store, settings, executor, summary, observe, show_progress, log)
    return summary


def estimated_costs(host: Host, specs: list[RunSpec]) -> list[float]:
    """Each run's relative cost, for ordering: its steps, times the student passes a step makes (one more when
    a component reads target batches), doubled when a component runs the teacher every step."""
    costs = []
    for spec, every_step in zip(specs, teacher_every_step(host, specs), strict=True):
        passes = 2.0 if any(host.methods.get(name).uses_target for name in spec.components) else 1.0
        costs.append(spec.steps * passes * (2.0 if every_step else 1.0))
    return costs


def _seed_groups(runs: list[RunSpec], vmap_seeds: bool) -> list[list[RunSpec]]:
    """Each run alone, or (vmapped seeds) the runs that differ only in their seed together, in ``runs`` order."""
    if not vmap_seeds:
        return [[spec] for spec in runs]
    groups: dict[str, list[RunSpec]] = {}
    for spec in runs:
        unseeded = dataclasses.replace(spec, seed=0, teacher=dataclasses.replace(spec.teacher, seed=0))
        groups.setdefault(unseeded.run_id, []).append(spec)
    return list(groups.values())


def _run_pipelined(
    host: Host, pending: list[RunSpec], store: Store, settings: EngineSettings, executor: Any, summary: GridSummary,
    observe: _Observers, show_progress: bool, log: Callable[[str], None],
) -> None:
    """Teachers and runs as one job list: each run waits only for its own teacher, longest runs first.

    Teachers another process is training right now are not waited for here: their runs
    start when a worker is free and wait for the teacher's cache file inside the run. With
    vmapped seeds one job trains every seed of a configuration and reports each member.
    """
    teachers = list({s.teacher.key: s.teacher for s in pending}.values())
    costs = estimated_costs(host, pending)
    runs = [pending[i] for i in sorted(range(len(pending)), key=lambda i: -costs[i])]  # stable: ties keep the grid's order
    groups = _seed_groups(runs, settings.vmap_seeds)
    position = {teacher.key: index for index, teacher in enumerate(teachers)}
    jobs = [Job("teacher", teacher, settings, wait=False) for teacher in teachers]
    for group in groups:
        after = tuple(sorted({position[spec.teacher.key] for spec in group}))
        jobs.append(Job("ensemble", tuple(group), settings, after=after) if settings.vmap_seeds else Job("run", group[0], settings, after=after))
    teacher_errors: dict[str, str] = {}
    claimed: dict[int, set[str]] = {}  # per ensemble job, the members this grid claimed
    disabled = progress_disabled(show_progress)
    teacher_bar = tqdm(total=len(teachers), desc="teachers", unit="teacher", disable=disabled)
    run_bar = tqdm(total=len(runs), desc="runs", unit="run", disable=disabled)

    def ready(index: int) -> dict[str, Any] | None:
        if index < len(teachers):
            return None
        group = groups[index - len(teachers)]
        failed = next((teacher_errors[s.teacher.key] for s in group if s.teacher.key in teacher_errors), None)
        if failed is not None:  # fails with its teacher's error, untried
            return {"status": "failed", "error": f"its teacher failed: {failed}"}
        if not settings.vmap_seeds:
            return _claim_before_start(group[0], store, observe)
        # Members another process claimed are trained too (an ensemble is one computation) but not recorded here.
        claimed[index] = {s.run_id for s in group if _claim_before_start(s, store, observe) is None}
        return None if claimed[index] else {"status": "elsewhere"}

    def on_result(index: int, result: Mapping[str, Any]) -> None:
        if index < len(teachers):
            _teacher_finished(teachers[index], result, teacher_errors, summary, log)
            teacher_bar.update()
            return
        group = groups[index - len(teachers)]
        members = result.get("members") if result.get("status") == "done" else None
        for k, spec in enumerate(group):
            if index in claimed and spec.run_id not in claimed[index]:
                outcome: dict[str, Any] = {"status": "elsewhere"}
            elif members is not None:
                outcome = {"status": "done", **members[k]}
            else:  # the job's failure (or its answer from ready) is each member's
                outcome = dict(result)
            _finish(store, summary, spec, outcome, log, observe)
            run_bar.update()

    try:
        executor.run(jobs, on_result, ready)
    finally:
        teacher_bar.close()
        run_bar.close()


def _teacher_finished(
    teacher: TeacherSpec, result: Mapping[str, Any], errors: dict[str, str], summary: GridSummary, log: Callable[[str], None]
) -> None:
    label = teacher.label
    if result["status"] != "done":
        errors[teacher.key] = result["error"]
        log(f"{label} failed: {result['error']}")
    elif result["busy"]:
        log(f"{label}: another process is training it; its runs will wait for it")
    elif result["teacher_trained"]:
        summary.teachers_trained += 1
        log(f"{label}: source-val acc {result['metrics']['source_val.acc']:.1f}% in {result['metrics']['train_s']:.1f}s")


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
