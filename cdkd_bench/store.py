"""The results store: one SQLite row per run; a finished run is never overwritten or run twice.

Several processes may share a store. Before a run starts, its process *claims* it; a claim
is kept alive by a heartbeat and dies with its process, so a second grid skips the runs the
first is working on, and a killed grid's runs are picked up again. A failed result never
replaces a finished one; only ``forget`` (the ``cdkd-bench forget`` command) removes rows.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cdkd_bench.errors import UserError
from cdkd_bench.spec import RunSpec

SCHEMA_VERSION = 2
"""1: runs only; 2: claims (older stores are upgraded in place, newer ones are refused)."""
HEARTBEAT_S = 20.0
CLAIM_EXPIRES_S = 120.0
"""A claim whose heartbeat is older than this belongs to a dead (or unreachable) process."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    status TEXT NOT NULL CHECK (status IN ('done', 'failed')),
    suite TEXT NOT NULL,
    task TEXT NOT NULL,
    recipe TEXT NOT NULL,
    teacher_arch TEXT NOT NULL,
    student_arch TEXT NOT NULL,
    teacher_recipe TEXT NOT NULL,
    teacher_key TEXT NOT NULL,
    label_regime TEXT NOT NULL,
    selection TEXT NOT NULL,
    budget TEXT NOT NULL,
    seed INTEGER NOT NULL,
    spec TEXT NOT NULL,
    metrics TEXT,
    timings TEXT,
    provenance TEXT,
    error TEXT,
    traceback TEXT,
    finished_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_by_suite ON runs (suite, status);
CREATE TABLE IF NOT EXISTS claims (
    run_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    heartbeat_at REAL NOT NULL
);
"""


@dataclass(frozen=True)
class StoredRun:
    """One row of the store, decoded."""

    run_id: str
    status: str
    spec: RunSpec
    metrics: dict[str, Any]
    timings: dict[str, Any]
    provenance: dict[str, Any]
    error: str | None
    finished_at: str
    traceback: str | None = None


@dataclass(frozen=True)
class RunSummary:
    """A stored run's status, grouping columns and time, without decoding its spec or metrics (for counting)."""

    run_id: str
    status: str
    suite: str
    budget: str
    teacher_recipe: str
    recipe: str
    total_s: float | None
    """``timings.total_s``: the run's wall time, when it was recorded."""


@dataclass(frozen=True)
class Claim:
    """A run some process has started; ``alive`` is False once that process is gone or silent (a stale claim)."""

    run_id: str
    owner: str
    host: str
    pid: int
    heartbeat_at: float
    alive: bool


def _total_seconds(timings: str | None) -> float | None:
    try:
        value = (json.loads(timings) or {}).get("total_s") if timings else None
    except (ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


_RUN_COLUMNS = "run_id, status, spec, metrics, timings, provenance, error, finished_at, traceback"


def _decode(row: tuple[Any, ...]) -> StoredRun:
    return StoredRun(
        run_id=row[0],
        status=row[1],
        spec=RunSpec.from_dict(json.loads(row[2])),
        metrics=json.loads(row[3]) or {},
        timings=json.loads(row[4]) or {},
        provenance=json.loads(row[5]) or {},
        error=row[6],
        finished_at=row[7],
        traceback=row[8],
    )


class Store:
    """A SQLite file of runs; each write is one transaction, so a killed grid loses nothing finished.

    ``read_only`` opens an existing store without writing to it (for tables from a store
    the user may not write).
    """

    def __init__(self, path: Path, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self.host = socket.gethostname()
        self.owner = f"{self.host}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        where = f"results store {str(self.path)!r}"
        if self.path.exists() and not self.path.is_file():
            raise UserError(f"{where} is not a file")
        if read_only and not self.path.exists():
            raise UserError(f"{where} does not exist; run `cdkd-bench run` first or pass --store")
        if not read_only:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UserError(f"cannot create the folder of {where} ({exc.strerror or exc}); choose another --store") from None
        try:
            with self._connect() as db:
                self._check_schema(db, where)
        except sqlite3.OperationalError as exc:
            raise UserError(f"{where} cannot be opened ({exc}); check its folder exists and is writable") from None
        except sqlite3.DatabaseError as exc:
            raise UserError(f"{where} is not a cdkd-bench SQLite store ({exc})") from None

    def _check_schema(self, db: sqlite3.Connection, where: str) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if version > SCHEMA_VERSION:
            raise UserError(f"{where} was written by a newer cdkd-bench (schema {version}, this one reads up to "
                            f"{SCHEMA_VERSION}); upgrade cdkd-bench")
        if tables and "runs" not in tables:
            raise UserError(f"{where} is an SQLite file of another program (no 'runs' table); nothing was written to it")
        if self.read_only:
            if "runs" not in tables:
                raise UserError(f"{where} holds no runs table; it is not a cdkd-bench store")
            return
        for statement in filter(str.strip, _SCHEMA.split(";")):  # executescript would commit our transaction
            db.execute(statement)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        if self.read_only:
            db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
        else:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            if self.read_only:
                yield db
            else:
                # IMMEDIATE takes the write lock at the start: check-then-write is atomic across processes.
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
        finally:
            db.close()

    # ------------------------------------------------------------------ reading

    def done_ids(self) -> set[str]:
        return self._ids("done")

    def failed_ids(self) -> set[str]:
        return self._ids("failed")

    def _ids(self, status: str) -> set[str]:
        with self._connect() as db:
            return {row[0] for row in db.execute("SELECT run_id FROM runs WHERE status = ?", (status,))}

    def runs(self, suite: str | None = None, status: str | None = "done") -> list[StoredRun]:
        query, params = f"SELECT {_RUN_COLUMNS} FROM runs", []
        clauses = []
        if suite is not None:
            clauses.append("suite = ?")
            params.append(suite)
        if status is not None:
            clauses.append("status = ?")
            params.append(status)
        if clauses:
            query += " WHERE " + " AND ".join(clauses)
        query += " ORDER BY suite, task, recipe, seed"
        with self._connect() as db:
            rows = db.execute(query, params).fetchall()
        return [_decode(r) for r in rows]

    def run(self, run_id: str) -> StoredRun | None:
        """One stored run (done or failed), with its traceback; None if the store does not hold it."""
        with self._connect() as db:
            row = db.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return _decode(row) if row is not None else None

    def run_ids_starting(self, prefix: str) -> list[str]:
        """The stored run ids that start with ``prefix``, sorted."""
        with self._connect() as db:
            rows = db.execute("SELECT run_id FROM runs WHERE substr(run_id, 1, ?) = ? ORDER BY run_id", (len(prefix), prefix))
            return [row[0] for row in rows]

    def summaries(self) -> list[RunSummary]:
        """Every stored run, done or failed, as counting needs it: cheap even for a large store."""
        with self._connect() as db:
            rows = db.execute("SELECT run_id, status, suite, budget, teacher_recipe, recipe, timings FROM runs ORDER BY run_id").fetchall()
        return [RunSummary(run_id, status, suite, budget, teacher_recipe, recipe, _total_seconds(timings))
                for run_id, status, suite, budget, teacher_recipe, recipe, timings in rows]

    def suites(self) -> list[str]:
        with self._connect() as db:
            return [row[0] for row in db.execute("SELECT DISTINCT suite FROM runs ORDER BY suite")]

    # ------------------------------------------------------------------ claims

    def claim(self, run_id: str) -> bool:
        """Take the run for this process; False if it is done or a live process holds it."""
        now = time.time()
        with self._connect() as db:
            if db.execute("SELECT 1 FROM runs WHERE run_id = ? AND status = 'done'", (run_id,)).fetchone():
                return False
            holder = db.execute("SELECT owner, host, pid, heartbeat_at FROM claims WHERE run_id = ?", (run_id,)).fetchone()
            if holder is not None and holder[0] != self.owner and self._alive(holder[1], holder[2], holder[3], now):
                return False
            db.execute(
                "INSERT OR REPLACE INTO claims (run_id, owner, host, pid, heartbeat_at) VALUES (?, ?, ?, ?, ?)",
                (run_id, self.owner, self.host, os.getpid(), now),
            )
        return True

    def _alive(self, host: str, pid: int, heartbeat_at: float, now: float) -> bool:
        if now - heartbeat_at > CLAIM_EXPIRES_S:
            return False
        return _pid_alive(pid) if host == self.host else True

    def claims(self) -> list[Claim]:
        """Every claim in the store, each with whether its process still holds it."""
        now = time.time()
        with self._connect() as db:
            if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'claims'").fetchone() is None:
                return []  # a schema-1 store read without upgrading it
            rows = db.execute("SELECT run_id, owner, host, pid, heartbeat_at FROM claims ORDER BY run_id").fetchall()
        return [Claim(run_id, owner, host, pid, heartbeat_at, self._alive(host, pid, heartbeat_at, now))
                for run_id, owner, host, pid, heartbeat_at in rows]

    def release_claims(self) -> None:
        with self._connect() as db:
            db.execute("DELETE FROM claims WHERE owner = ?", (self.owner,))

    def heartbeat(self) -> None:
        with self._connect() as db:
            db.execute("UPDATE claims SET heartbeat_at = ? WHERE owner = ?", (time.time(), self.owner))

    @contextlib.contextmanager
    def claims_kept_alive(self) -> Iterator[None]:
        """Refresh this process's claims in the background; release them all at the end."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(HEARTBEAT_S):
                with contextlib.suppress(sqlite3.Error):
                    self.heartbeat()

        thread = threading.Thread(target=beat, name="cdkd-bench-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            with contextlib.suppress(sqlite3.Error):
                self.release_claims()

    # ------------------------------------------------------------------ writing

    def record(self, spec: RunSpec, result: dict[str, Any]) -> bool:
        """Store the run's result and drop its claim; False (nothing written) if it is already done.

        A finished row is never replaced, not even by another finished result; a failed row
        is replaced by the next attempt's result.
        """
        row = {
            "run_id": spec.run_id,
            "status": result["status"],
            "suite": spec.suite,
            "task": spec.task,
            "recipe": spec.recipe,
            "teacher_arch": spec.teacher.arch,
            "student_arch": spec.student_arch,
            "teacher_recipe": spec.teacher.teacher_recipe,
            "teacher_key": spec.teacher.key,
            "label_regime": spec.label_regime,
            "selection": "",  # applied when tables are built, over the stored checkpoints
            "budget": spec.budget,
            "seed": spec.seed,
            "spec": json.dumps(spec.to_dict(), sort_keys=True),
            "metrics": json.dumps(result.get("metrics")),
            "timings": json.dumps(result.get("timings")),
            "provenance": json.dumps(result.get("provenance")),
            "error": result.get("error"),
            "traceback": result.get("traceback"),
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        columns = ", ".join(row)
        marks = ", ".join(f":{k}" for k in row)
        with self._connect() as db:
            db.execute("DELETE FROM claims WHERE run_id = ? AND owner = ?", (spec.run_id, self.owner))
            if db.execute("SELECT 1 FROM runs WHERE run_id = ? AND status = 'done'", (spec.run_id,)).fetchone():
                return False
            db.execute(f"INSERT OR REPLACE INTO runs ({columns}) VALUES ({marks})", row)
        return True

    def forget(self, run_ids: Iterable[str]) -> list[str]:
        """Delete these runs (done or failed) so the next grid runs them again; returns those found."""
        found = []
        with self._connect() as db:
            for run_id in run_ids:
                if db.execute("DELETE FROM runs WHERE run_id = ?", (run_id,)).rowcount:
                    found.append(run_id)
        return found
