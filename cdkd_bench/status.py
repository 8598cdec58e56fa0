"""What a results store holds and what a grid still needs: ``cdkd-bench status`` and ``cdkd-bench runs show``.

Both only read the store (a missing one is never created) and import nothing heavy: the
engine is imported by the command line only when a grid has to be expanded.
"""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cdkd_bench.errors import UserError
from cdkd_bench.spec import RunSpec
from cdkd_bench.store import CLAIM_EXPIRES_S, Claim, RunSummary, Store, StoredRun

AMBIGUOUS_LISTED = 5
UNKNOWN_GROUP = ("?", "?", "?")
"""The group of a running run that the store cannot place yet: only the grid that claimed it knows its spec."""
STATES = ("done", "failed", "running", "pending")
HEADLINE = ("target_test.acc", "target_test.balanced_acc", "source_val.acc", "teacher.target_test.acc")
"""The metrics ``runs show`` puts first (the last checkpoint's, as the leaderboard's default rule reads them)."""

Group = tuple[str, str, str]
"""(suite, budget, teacher recipe)"""


def open_store(path: Path) -> Store:
    """The store at ``path``, read-only; a missing or empty one is one sentence (and nothing is created)."""
    where = str(path)
    if not path.exists():
        raise UserError(f"no results store at {where!r}; run `cdkd-bench run` first, or pass --store")
    if path.is_file() and path.stat().st_size == 0:
        raise UserError(f"the results store at {where!r} is empty; run `cdkd-bench run` first")
    store = Store(path, read_only=True)
    if not store.suites() and not store.claims():
        raise UserError(f"the results store at {where!r} holds no runs yet; run `cdkd-bench run` first")
    return store


# ---------------------------------------------------------------------- status


@dataclass
class StoreStatus:
    """Counts per (suite, budget, teacher recipe); ``pending`` and the rest only when a grid was given."""

    store: str
    counts: dict[Group, Counter[str]] = field(default_factory=dict)
    stale: int = 0
    """Claims whose process is gone or silent: nobody is running those runs any more."""
    grid: bool = False
    outside: int = 0
    """With a grid: stored or running runs that are not part of it."""
    pending: list[RunSpec] = field(default_factory=list)

    def total(self, state: str) -> int:
        return sum(c[state] for c in self.counts.values())


def _state(run_id: str, rows: dict[str, RunSummary], live: set[str]) -> str:
    """A finished run is done whatever else is recorded; a live claim is running (a failed run tried again too)."""
    row = rows.get(run_id)
    if row is not None and row.status == "done":
        return "done"
    if run_id in live:
        return "running"
    return row.status if row is not None else "pending"


def collect(store: Store, specs: Sequence[RunSpec] | None = None) -> StoreStatus:
    """Count the store's runs per group; with ``specs`` (an expanded grid), count that grid's runs instead."""
    rows = {row.run_id: row for row in store.summaries()}
    claims = store.claims()
    live = {c.run_id for c in claims if c.alive}
    status = StoreStatus(store=str(store.path), grid=specs is not None)
    status.stale = sum(1 for c in claims if not c.alive and _state(c.run_id, rows, live) != "done")

    def count(group: Group, state: str) -> None:
        status.counts.setdefault(group, Counter())[state] += 1

    if specs is None:
        for row in rows.values():
            count((row.suite, row.budget, row.teacher_recipe), _state(row.run_id, rows, live))
        unplaced = len(live - rows.keys())
        if unplaced:
            status.counts[UNKNOWN_GROUP] = Counter(running=unplaced)
        return status
    in_grid = set()
    for spec in specs:
        if spec.run_id in in_grid:
            continue
        in_grid.add(spec.run_id)
        state = _state(spec.run_id, rows, live)
        count((spec.suite, spec.budget, spec.teacher.teacher_recipe), state)
        if state == "pending":
            status.pending.append(spec)
    status.outside = len((rows.keys() | live) - in_grid)
    return status


def render_status(status: StoreStatus, eta: str | None = None) -> str:
    """A small aligned table, a totals line, and notes on stale claims and (with a grid) the ETA."""
    states = STATES if status.grid else STATES[:3]
    header = ["suite", "budget", "teacher recipe", *states]
    body = [[*group, *(str(counts[s]) for s in states)]
            for group, counts in sorted(status.counts.items(), key=lambda item: (item[0] == UNKNOWN_GROUP, item[0]))]
    if len(body) > 1:
        body.append(["total", "", "", *(str(status.total(s)) for s in states)])
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        text = [c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "  ".join(text).rstrip()

    what = "this grid's runs" if status.grid else "runs"
    totals = ", ".join(f"{status.total(s)} {s}" for s in states)
    lines = [f"results store {status.store!r}, {what}: {totals}", "", line(header), *(line(row) for row in body), ""]
    if any(group == UNKNOWN_GROUP for group in status.counts):
        lines.append("? = runs being run whose spec only the grid running them knows (give its grid flags to place them)")
    if status.stale:
        lines.append(f"{status.stale} stale claim(s): their processes are gone or have been silent for over {CLAIM_EXPIRES_S:.0f} s; "
                     "the next grid runs those runs again")
    if status.grid and status.outside:
        lines.append(f"the store holds {status.outside} more run(s) outside this grid (`cdkd-bench status` without grid flags "
                     "counts every run)")
    if eta is not None:
        lines.append(eta)
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines) + "\n"


def estimate(pending: Sequence[RunSpec], finished: Iterable[RunSummary], workers: int, failed: int = 0) -> str:
    """How long the pending runs take, divided over ``workers``: each at the median ``total_s`` of the finished runs
    of its recipe, on the same suite and budget (a budget's step counts set the time far more than a recipe does);
    failing those, of its suite and budget, then of its recipe, then of every finished run."""
    if not pending:
        return "ETA: nothing pending (every run of this grid is done, failed or running)"
    times: dict[tuple[str, ...], list[float]] = {}
    for row in finished:
        if row.status == "done" and row.total_s is not None and row.total_s >= 0:
            for key in ((row.suite, row.budget, row.recipe), (row.suite, row.budget), (row.recipe,), ()):
                times.setdefault(key, []).append(row.total_s)
    if not times:
        return f"ETA unknown: {len(pending)} run(s) pending, and no finished run in the store has timings to estimate from"
    medians = {key: statistics.median(values) for key, values in times.items()}
    used = [next(medians[key] for key in ((s.suite, s.budget, s.recipe), (s.suite, s.budget), (s.recipe,), ()) if key in medians)
            for s in pending]
    low, high = min(used), max(used)
    basis = f"median {low:.1f} s per run" if round(low, 1) == round(high, 1) else f"median {low:.1f}-{high:.1f} s per run by recipe"
    not_counted = f"; the grid's {failed} failed run(s) are not counted" if failed else ""
    return (f"ETA ~{duration(sum(used) / workers)} for {len(pending)} pending run(s) "
            f"({basis}, {workers} worker{'s' if workers != 1 else ''}){not_counted}")


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{max(1, round(seconds))} s"
    if seconds < 120 * 60:
        return f"{max(1, round(seconds / 60))} min"
    return f"{seconds / 3600:.1f} h"


# ---------------------------------------------------------------------- runs show


def find_run(store: Store, prefix: str, min_length: int) -> tuple[str, StoredRun | None, Claim | None]:
    """The one run whose id starts with ``prefix`` (at least ``min_length`` characters): stored, or only claimed
    (running); else one sentence."""
    wanted = prefix.strip().lower()
    if len(wanted) < min_length:
        raise UserError(f"run id {prefix!r} is too short; give at least {min_length} of its characters")
    claims = {c.run_id: c for c in store.claims()}
    matches = sorted({*store.run_ids_starting(wanted), *(r for r in claims if r.startswith(wanted))})
    if not matches:
        raise UserError(f"no run with an id starting {prefix!r} in results store {str(store.path)!r}")
    if len(matches) > 1:
        listed = ", ".join(matches[:AMBIGUOUS_LISTED])
        more = f" and {len(matches) - AMBIGUOUS_LISTED} more" if len(matches) > AMBIGUOUS_LISTED else ""
        raise UserError(f"run id {prefix!r} is ambiguous: it starts {len(matches)} runs ({listed}{more}); give more characters")
    run_id = matches[0]
    return run_id, store.run(run_id), claims.get(run_id)


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return json.dumps(value) if isinstance(value, list | dict) else str(value)
    return str(value) if isinstance(value, int) else f"{value:.2f}"


def _aligned(pairs: Sequence[tuple[str, str]], indent: str = "  ") -> list[str]:
    width = max((len(k) for k, _ in pairs), default=0)
    return [f"{indent}{k.ljust(width)}  {v}" for k, v in pairs]


def _claim_note(claim: Claim) -> str:
    ago = max(0, round(time.time() - claim.heartbeat_at))
    if claim.alive:
        return f"running on {claim.host} (pid {claim.pid}, last heartbeat {ago} s ago)"
    return f"claimed by a process that is gone (pid {claim.pid} on {claim.host}, silent for {ago} s); the next grid runs it again"


def _checkpoint(point: dict[str, Any]) -> str:
    parts = [f"step {point.get('step', '?')}"]
    for key, label in (("target_test.acc", "target"), ("target_test.balanced_acc", "balanced"), ("source_val.acc", "source"),
                       ("teacher_student_agreement", "agreement")):
        if isinstance(point.get(key), int | float):
            parts.append(f"{label} {point[key]:.2f}")
    return ", ".join(parts)


def render_run(run_id: str, run: StoredRun | None, claim: Claim | None) -> str:
    """One run: status, spec, metrics (headline, checkpoints, the rest), timings, error and traceback, provenance."""
    if run is None:
        if claim is None:
            return f"run {run_id}: not stored\n"
        finishes = "; its spec and results are stored when it finishes" if claim.alive else ""
        return f"run {run_id}: {_claim_note(claim)}{finishes}\n"
    status = run.status
    if claim is not None and run.status != "done":
        status += f", and now {_claim_note(claim)}"
    spec = run.spec
    lines = [
        f"run {run_id}: {status} (finished {run.finished_at})",
        f"  {spec.task}, recipe {spec.recipe}, teacher recipe {spec.teacher.teacher_recipe}, seed {spec.seed}, budget {spec.budget}",
        "",
        "spec:",
        json.dumps(spec.to_dict(), indent=2, sort_keys=True),
    ]
    if run.error is not None or run.status == "failed":
        lines += ["", "error:", *(f"  {line}" for line in (run.error or "no error recorded").splitlines())]
        if run.traceback:
            lines += ["", "traceback:", *(f"  {line}" for line in run.traceback.rstrip().splitlines())]
    metrics = dict(run.metrics)
    if metrics:
        lines += ["", "metrics:"]
        lines += _aligned([(key, _number(metrics.pop(key))) for key in HEADLINE if key in metrics])
        checkpoints = metrics.pop("checkpoints", None)
        if isinstance(checkpoints, list) and checkpoints:
            lines.append(f"  checkpoints ({len(checkpoints)}):")
            lines += [f"    {_checkpoint(p)}" for p in checkpoints if isinstance(p, dict)]
        rest = [(k, _number(v)) for k, v in sorted(metrics.items()) if not isinstance(v, list | dict)]
        if rest:
            lines.append("  other:")
            lines += _aligned(rest, indent="    ")
    if run.timings:
        lines += ["", "timings:", "  " + ", ".join(f"{k} {_number(v)} s" if isinstance(v, int | float) and not isinstance(v, bool)
                                                    else f"{k} {_number(v)}" for k, v in run.timings.items())]
    if run.provenance:
        lines += ["", "provenance:", *_aligned([(k, _number(v)) for k, v in run.provenance.items()])]
    return "\n".join(lines) + "\n"
