"""The results store keeps every finished run exactly once, whatever other processes do."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cdkd_bench.errors import UserError
from cdkd_bench.grid import GridRequest, expand
from cdkd_bench.store import CLAIM_EXPIRES_S, SCHEMA_VERSION, Store

DONE = {"status": "done", "metrics": {"target_test.acc": 70.0}, "timings": {}, "provenance": {}}
FAILED = {"status": "failed", "error": "RuntimeError: out of memory"}


@pytest.fixture(scope="module")
def spec(host):
    return expand(host, GridRequest(tasks=("printed_to_handwritten",), recipes=("kd",), seeds=(0,), budget="smoke"))[0]


def test_a_failed_result_never_replaces_a_finished_one(tmp_path: Path, spec) -> None:
    first, second = Store(tmp_path / "r.sqlite"), Store(tmp_path / "r.sqlite")  # two processes' views
    assert first.record(spec, DONE) is True
    assert second.record(spec, FAILED) is False
    [row] = first.runs(status=None)
    assert row.status == "done" and row.metrics == DONE["metrics"]


def test_a_finished_run_is_not_replaced_by_another_finished_result(tmp_path: Path, spec) -> None:
    store = Store(tmp_path / "r.sqlite")
    store.record(spec, DONE)
    assert store.record(spec, {**DONE, "metrics": {"target_test.acc": 10.0}}) is False
    assert store.runs()[0].metrics == DONE["metrics"]


def test_a_failed_run_is_replaced_by_its_retry(tmp_path: Path, spec) -> None:
    store = Store(tmp_path / "r.sqlite")
    store.record(spec, FAILED)
    assert store.record(spec, DONE) is True
    assert [r.status for r in store.runs(status=None)] == ["done"]


def test_forget_is_the_explicit_way_to_run_a_finished_run_again(tmp_path: Path, spec) -> None:
    store = Store(tmp_path / "r.sqlite")
    store.record(spec, DONE)
    assert store.forget([spec.run_id, "unknown"]) == [spec.run_id]
    assert store.runs(status=None) == [] and store.claim(spec.run_id)


def test_a_claimed_run_is_skipped_by_another_process_until_released(tmp_path: Path, spec) -> None:
    mine, theirs = Store(tmp_path / "r.sqlite"), Store(tmp_path / "r.sqlite")
    assert mine.claim(spec.run_id) is True
    assert mine.claim(spec.run_id) is True  # claiming again is harmless
    assert theirs.claim(spec.run_id) is False
    mine.release_claims()
    assert theirs.claim(spec.run_id) is True


def test_recording_drops_the_claim_and_a_done_run_cannot_be_claimed(tmp_path: Path, spec) -> None:
    mine, theirs = Store(tmp_path / "r.sqlite"), Store(tmp_path / "r.sqlite")
    mine.claim(spec.run_id)
    mine.record(spec, DONE)
    with sqlite3.connect(tmp_path / "r.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM claims").fetchone()[0] == 0
    assert theirs.claim(spec.run_id) is False


def test_the_claim_of_a_killed_process_is_taken_over_at_once(tmp_path: Path, spec) -> None:
    code = (
        "import sys; from cdkd_bench.store import Store; s = Store(sys.argv[1]); "
        "assert s.claim(sys.argv[2])"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "r.sqlite"), spec.run_id], check=True)
    # That process has exited without releasing its claim, as a `kill -9` would leave it.
    assert Store(tmp_path / "r.sqlite").claim(spec.run_id) is True


def test_a_claim_without_a_recent_heartbeat_expires(tmp_path: Path, spec) -> None:
    mine, theirs = Store(tmp_path / "r.sqlite"), Store(tmp_path / "r.sqlite")
    mine.claim(spec.run_id)
    with sqlite3.connect(tmp_path / "r.sqlite") as db:  # as if its host stopped answering long ago
        db.execute("UPDATE claims SET host = 'elsewhere', heartbeat_at = ?", (time.time() - CLAIM_EXPIRES_S - 1,))
    assert theirs.claim(spec.run_id) is True


def test_a_live_claim_on_another_host_is_respected(tmp_path: Path, spec) -> None:
    mine, theirs = Store(tmp_path / "r.sqlite"), Store(tmp_path / "r.sqlite")
    mine.claim(spec.run_id)
    with sqlite3.connect(tmp_path / "r.sqlite") as db:
        db.execute("UPDATE claims SET host = 'elsewhere', pid = 1")
    assert theirs.claim(spec.run_id) is False


def test_the_heartbeat_keeps_claims_fresh_and_ends_by_releasing_them(tmp_path: Path, spec) -> None:
    store = Store(tmp_path / "r.sqlite")
    with store.claims_kept_alive():
        store.claim(spec.run_id)
        with sqlite3.connect(tmp_path / "r.sqlite") as db:
            db.execute("UPDATE claims SET heartbeat_at = 0")
        store.heartbeat()
        with sqlite3.connect(tmp_path / "r.sqlite") as db:
            assert db.execute("SELECT heartbeat_at FROM claims").fetchone()[0] > time.time() - 5
    with sqlite3.connect(tmp_path / "r.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM claims").fetchone()[0] == 0


def test_an_old_store_is_upgraded_and_its_runs_kept(tmp_path: Path, spec) -> None:
    path = tmp_path / "old.sqlite"
    Store(path).record(spec, DONE)
    with sqlite3.connect(path) as db:  # what the first release wrote: runs only, schema 1
        db.execute("DROP TABLE claims")
        db.execute("PRAGMA user_version = 1")
    store = Store(path)
    assert [r.run_id for r in store.runs()] == [spec.run_id]
    assert store.claim("another-run")
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_reading_a_store_never_writes_to_it(tmp_path: Path, spec) -> None:
    path = tmp_path / "old.sqlite"
    Store(path).record(spec, DONE)
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE claims")
        db.execute("PRAGMA user_version = 1")
    before = path.read_bytes()
    reader = Store(path, read_only=True)
    assert [r.run_id for r in reader.runs()] == [spec.run_id]
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda p: p.write_text("not a database " * 100), "is not a cdkd-bench SQLite store"),
        (lambda p: sqlite3.connect(p).execute("CREATE TABLE invoices (id INTEGER)").connection.commit(),
         "is an SQLite file of another program"),
        (lambda p: sqlite3.connect(p).executescript("CREATE TABLE runs (run_id TEXT); PRAGMA user_version = 7;"),
         r"was written by a newer cdkd-bench \(schema 7"),
        (lambda p: p.mkdir(), "is not a file"),
    ],
    ids=["not-sqlite", "foreign-sqlite", "newer-schema", "folder"],
)
@pytest.mark.parametrize("read_only", [False, True], ids=["read-write", "read-only"])
def test_a_file_that_is_not_our_store_is_refused_and_left_alone(tmp_path: Path, setup, message: str, read_only: bool) -> None:
    path = tmp_path / "store.sqlite"
    setup(path)
    before = path.read_bytes() if path.is_file() else None
    with pytest.raises(UserError, match=message):
        Store(path, read_only=read_only)
    assert (path.read_bytes() if path.is_file() else None) == before
