"""The results store: one SQLite row per run, written atomically, never run twice once done."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cdkd_bench.errors import UserError
from cdkd_bench.spec import RunSpec

SCHEMA_VERSION = 1
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


class Store:
    """A SQLite file of runs; each write is one transaction, so a killed grid loses nothing finished."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if self.path.exists() and not self.path.is_file():
            raise UserError(f"results store {str(self.path)!r} is not a file")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self._connect() as db:
                db.executescript(_SCHEMA)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            raise UserError(f"results store {str(self.path)!r} is not a readable SQLite file ({exc})") from None

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30)
        try:
            with db:  # commits on success, rolls back on error
                yield db
        finally:
            db.close()

    def done_ids(self) -> set[str]:
        with self._connect() as db:
            return {row[0] for row in db.execute("SELECT run_id FROM runs WHERE status = 'done'")}

    def record(self, spec: RunSpec, result: dict[str, Any]) -> None:
        """Insert or replace the run's row (a failed run is retried and overwritten later)."""
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
            "selection": spec.selection,
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
            db.execute(f"INSERT OR REPLACE INTO runs ({columns}) VALUES ({marks})", row)

    def runs(self, suite: str | None = None, status: str | None = "done") -> list[StoredRun]:
        query, params = "SELECT run_id, status, spec, metrics, timings, provenance, error, finished_at FROM runs", []
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
        return [
            StoredRun(
                run_id=r[0],
                status=r[1],
                spec=RunSpec.from_dict(json.loads(r[2])),
                metrics=json.loads(r[3]) or {},
                timings=json.loads(r[4]) or {},
                provenance=json.loads(r[5]) or {},
                error=r[6],
                finished_at=r[7],
            )
            for r in rows
        ]
