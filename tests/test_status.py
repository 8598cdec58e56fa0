"""`cdkd-bench status` and `cdkd-bench runs show`: read a store, count a grid's runs, show one run; never write."""

from __future__ import annotations

import shutil
import sqlite3
import time
from pathlib import Path

import pytest
from test_startup import cdkd

from cdkd_bench.cli import _RUN_FLAGS, build_parser, main
from cdkd_bench.grid import GridRequest, expand
from cdkd_bench.spec import RunSpec
from cdkd_bench.status import estimate
from cdkd_bench.store import CLAIM_EXPIRES_S, RunSummary, Store

STORE = "results.sqlite"
TASK = "textured_to_handwritten"
GRID = ["--budget", "smoke", "--tasks", TASK, "--recipes", "kd"]
SECONDS = {"source_only": 10.0, "kd": 20.0}
"""The stored runs' total_s by recipe; target_oracle's smoke run failed, so it has no time of its own."""


def _request(budget: str = "smoke", seeds: tuple[int, ...] = (0,)) -> GridRequest:
    return GridRequest(tasks=(TASK,), recipes=("kd",), seeds=seeds, budget=budget)


def _done(spec: RunSpec, seconds: float) -> dict:
    checkpoints = [{"step": step, "target_test.acc": 40.0 + step, "target_test.balanced_acc": 39.0 + step, "source_val.acc": 90.0,
                    "teacher_student_agreement": 70.0} for step in (5, 10)]
    metrics = {**{k: v for k, v in checkpoints[-1].items() if k != "step"}, "teacher.target_test.acc": 47.5,
               "teacher.source_val.acc": 95.0, "student.params": 78002, "checkpoints": checkpoints}
    provenance = {"cdkd_bench": "0.1.0", "torch": "2.14.1", "device": "cpu (x86_64, 1 thread)", "plugins": {"kd": "0.1.0"}}
    return {"status": "done", "metrics": metrics, "timings": {"data_s": 0.5, "total_s": seconds}, "provenance": provenance}


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory, session_data: Path, host) -> Path:
    """A store of two groups: smoke (seed 0: source_only and kd done, target_oracle failed) and quick (seed 0, all done)."""
    folder = tmp_path_factory.mktemp("status")
    cache = folder / "cache"
    cache.mkdir()
    (cache / "data").symlink_to(session_data, target_is_directory=True)
    store = Store(folder / STORE)
    for spec in expand(host, _request(), cache):
        if spec.recipe == "target_oracle":
            store.record(spec, {"status": "failed", "error": "RuntimeError: the oracle ran out of memory",
                                "traceback": "Traceback (most recent call last):\n  File \"engine.py\"\nRuntimeError: out of memory",
                                "timings": {"total_s": 1.0}})
        else:
            store.record(spec, _done(spec, SECONDS[spec.recipe]))
    for spec in expand(host, _request("quick"), cache):
        store.record(spec, _done(spec, 99.0))
    return folder / STORE


@pytest.fixture
def store(stored: Path, cache_dir: Path) -> Path:
    """A copy of the stored runs in the test's own folder (its working directory)."""
    shutil.copy(stored, STORE)
    return Path(STORE)


def _spec(store: Path, recipe: str, budget: str = "smoke") -> RunSpec:
    return next(r.spec for r in Store(store, read_only=True).runs(status=None) if r.spec.recipe == recipe and r.spec.budget == budget)


def _rows(out: str) -> dict[tuple[str, ...], list[int]]:
    """The status table: (suite, budget, teacher recipe), or ('total',), → its counts."""
    table = {}
    for line in out.splitlines():
        cells = line.split()
        if cells[:1] == ["total"]:
            table[("total",)] = [int(c) for c in cells[1:]]
        elif len(cells) >= 6 and all(c.isdigit() for c in cells[3:]):
            table[tuple(cells[:3])] = [int(c) for c in cells[3:]]
    return table


def _contents(path: Path) -> bytes:
    return path.read_bytes()


def test_status_counts_done_failed_and_running_per_group(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _contents(store)
    assert main(["status", "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"results store {STORE!r}, runs: 5 done, 1 failed, 0 running\n")
    assert out.splitlines()[2].split() == ["suite", "budget", "teacher", "recipe", "done", "failed", "running"]
    assert _rows(out) == {("embedded", "quick", "source"): [3, 0, 0], ("embedded", "smoke", "source"): [2, 1, 0], ("total",): [5, 1, 0]}
    assert "ETA" not in out and "pending" not in out
    assert _contents(store) == before


def test_grid_flags_add_pending_runs_and_an_eta(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--store", str(store), *GRID, "--seeds", "0,1", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert _rows(out) == {("embedded", "smoke", "source"): [2, 1, 0, 3]}
    assert "this grid's runs: 2 done, 1 failed, 0 running, 3 pending" in out
    assert "the store holds 3 more run(s) outside this grid" in out
    # seed 1's source_only (10 s) and kd (20 s) at their recipe's median; target_oracle has none, so the median of all (15 s)
    assert out.rstrip().endswith("ETA ~45 s for 3 pending run(s) (median 10.0-20.0 s per run by recipe, 1 worker); "
                                 "the grid's 1 failed run(s) are not counted")

    Path("grid.toml").write_text('budget = "smoke"\ntasks = ["textured_to_handwritten"]\nrecipes = ["kd"]\nseeds = [0, 1, 2]\n'
                                 f'store = "{store}"\n')
    assert main(["status", "--grid", "grid.toml", "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert _rows(out) == {("embedded", "smoke", "source"): [2, 1, 0, 6]}
    assert "ETA ~45 s for 6 pending run(s) (median 10.0-20.0 s per run by recipe, 2 workers)" in out

    assert main(["status", "--store", str(store), *GRID, "--seeds", "0"]) == 0
    assert "ETA: nothing pending" in capsys.readouterr().out


def test_eta_is_pending_runs_times_the_median_over_the_workers(stored: Path) -> None:
    kd = _spec(stored, "kd")
    finished = [RunSummary(f"{i:016x}", "done", "embedded", "smoke", "source", "kd", seconds) for i, seconds in enumerate((11.0, 11.8, 30.0))]
    assert estimate([kd] * 120, finished, 2) == "ETA ~12 min for 120 pending run(s) (median 11.8 s per run, 2 workers)"
    other = [RunSummary("f" * 16, "done", "embedded", "smoke", "source", "source_only", 4000.0)]
    assert estimate([kd] * 120, other, 1) == "ETA ~133.3 h for 120 pending run(s) (median 4000.0 s per run, 1 worker)"  # the fallback
    failed_only = [RunSummary("e" * 16, "failed", "embedded", "smoke", "source", "kd", 3.0)]
    assert "no finished run in the store has timings to estimate from" in estimate([kd], failed_only, 1)
    assert "no finished run" in estimate([kd], [RunSummary("d" * 16, "done", "embedded", "smoke", "source", "kd", None)], 1)


def test_a_live_claim_counts_as_running_and_a_dead_one_as_stale(store: Path, host, capsys: pytest.CaptureFixture[str]) -> None:
    seed1 = {s.recipe: s for s in expand(host, _request(seeds=(1,)))}
    holder = Store(store)
    assert holder.claim(seed1["kd"].run_id)
    assert holder.claim(_spec(store, "target_oracle").run_id)  # the failed run, tried again
    assert holder.claim(seed1["source_only"].run_id)
    with sqlite3.connect(store) as db:  # its process went silent
        db.execute("UPDATE claims SET heartbeat_at = ? WHERE run_id = ?", (time.time() - CLAIM_EXPIRES_S - 5, seed1["source_only"].run_id))

    assert main(["status", "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert _rows(out) == {("embedded", "quick", "source"): [3, 0, 0], ("embedded", "smoke", "source"): [2, 0, 1],
                          ("?", "?", "?"): [0, 0, 1], ("total",): [5, 0, 2]}
    assert "1 stale claim(s)" in out

    assert main(["status", "--store", str(store), *GRID, "--seeds", "0,1", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert _rows(out) == {("embedded", "smoke", "source"): [2, 0, 2, 2]}  # the stale one is pending again
    assert "ETA ~25 s for 2 pending run(s)" in out


def test_runs_show_by_prefix_prints_spec_metrics_timings_and_provenance(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kd = _spec(store, "kd")
    before = _contents(store)
    assert main(["runs", "show", kd.run_id[:7].upper(), "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"run {kd.run_id}: done (finished ")
    assert '"recipe": "kd"' in out and '"temperature": 4.0' in out and '"task": "embedded.textured_to_handwritten"' in out
    metrics = out[out.index("metrics:"):]
    assert [line.split()[0] for line in metrics.splitlines()[1:5]] == [
        "target_test.acc", "target_test.balanced_acc", "source_val.acc", "teacher.target_test.acc"]
    assert "target_test.acc           50.00" in metrics and "teacher.target_test.acc   47.50" in metrics
    assert "checkpoints (2):" in metrics and "step 5, target 45.00, balanced 44.00, source 90.00, agreement 70.00" in metrics
    assert "data_s 0.50 s, total_s 20.00 s" in out
    assert "provenance:" in out and 'plugins     {"kd": "0.1.0"}' in out
    assert "error:" not in out
    assert _contents(store) == before


def test_runs_show_a_failed_run_shows_its_error_and_traceback(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    oracle = _spec(store, "target_oracle")
    assert main(["runs", "show", oracle.run_id, "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"run {oracle.run_id}: failed (finished ")
    assert "error:\n  RuntimeError: the oracle ran out of memory" in out
    assert "traceback:\n  Traceback (most recent call last):" in out and "RuntimeError: out of memory" in out
    Store(store).claim(oracle.run_id)
    assert main(["runs", "show", oracle.run_id, "--store", str(store)]) == 0
    assert f"run {oracle.run_id}: failed, and now running on " in capsys.readouterr().out


def test_runs_show_a_run_that_is_only_running(store: Path, host, capsys: pytest.CaptureFixture[str]) -> None:
    kd1 = next(s for s in expand(host, _request(seeds=(1,))) if s.recipe == "kd")
    Store(store).claim(kd1.run_id)
    assert main(["runs", "show", kd1.run_id[:10], "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"run {kd1.run_id}: running on ") and "stored when it finishes" in out
    with sqlite3.connect(store) as db:  # its process went silent
        db.execute("UPDATE claims SET heartbeat_at = ? WHERE run_id = ?", (time.time() - CLAIM_EXPIRES_S - 5, kd1.run_id))
    assert main(["runs", "show", kd1.run_id[:10], "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"run {kd1.run_id}: claimed by a process that is gone ") and out.rstrip().endswith("the next grid runs it again")


def _ambiguous(store: Path) -> None:
    """Two stored runs whose ids share their first eight characters."""
    columns = "status, suite, task, recipe, teacher_arch, student_arch, teacher_recipe, teacher_key, label_regime, selection, " \
              "budget, seed, spec, metrics, timings, provenance, error, traceback, finished_at"
    kd = _spec(store, "kd").run_id
    with sqlite3.connect(store) as db:
        for run_id in ("abcdef0100000000", "abcdef0200000000"):
            db.execute(f"INSERT INTO runs (run_id, {columns}) SELECT ?, {columns} FROM runs WHERE run_id = ?", (run_id, kd))


def _empty(store: Path) -> None:
    store.unlink()
    Store(store)  # a store with its tables and no runs


def _nothing(store: Path) -> None:
    pass


@pytest.mark.parametrize(
    "argv, setup, message",
    [
        (["status", "--store", "missing.sqlite"], _nothing, "no results store at 'missing.sqlite'; run `cdkd-bench run` first"),
        (["status", "--store", "missing.sqlite", *GRID, "--seeds", "0,1"], _nothing, "no results store at 'missing.sqlite'"),
        (["runs", "show", "abcdef01", "--store", "missing.sqlite"], _nothing, "no results store at 'missing.sqlite'"),
        (["status", "--store", STORE], _empty, f"the results store at {STORE!r} holds no runs yet; run `cdkd-bench run` first"),
        (["runs", "show", "0123456789abcdef", "--store", STORE], _nothing,
         f"no run with an id starting '0123456789abcdef' in results store {STORE!r}"),
        (["runs", "show", "abcdef", "--store", STORE], _ambiguous,
         "run id 'abcdef' is ambiguous: it starts 2 runs (abcdef0100000000, abcdef0200000000); give more characters"),
        (["runs", "show", "abcde", "--store", STORE], _nothing, "run id 'abcde' is too short; give at least 6 of its characters"),
        (["runs"], _nothing, "the following arguments are required: ACTION"),
        (["status", "--store", STORE, "--workers", "2"], _nothing, "--workers matters only with a grid"),
        (["status", "--store", STORE, "--tasks", "textured_to_handwriten"], _nothing, "unknown task of suite 'embedded'"),
    ],
    ids=["status-missing", "status-grid-missing", "show-missing", "status-empty", "show-unknown", "show-ambiguous", "show-short",
         "runs-no-action", "workers-without-grid", "status-grid-typo"],
)
def test_mistakes_get_one_sentence_exit_2_and_the_store_is_left_alone(
    argv: list[str], setup, message: str, store: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    setup(store)
    before = _contents(store)
    try:
        status = main(argv)
    except SystemExit as exit_:  # argparse's own mistakes leave through SystemExit
        status = exit_.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2, err
    assert len(lines) == 1 and lines[0].startswith("cdkd-bench: error: ") and message in lines[0], err
    assert "Traceback" not in err
    assert not Path("missing.sqlite").exists()
    assert _contents(store) == before


def test_status_takes_every_grid_flag_of_run() -> None:
    def flags(*argv: str) -> set[str]:
        return set(vars(build_parser().parse_args(list(argv))))

    run, status = flags("run"), flags("status")
    assert {*_RUN_FLAGS, "grid", "hparams", "threads", "workers", "cache_dir", "data_root"} <= status
    assert status - {"command"} <= run
    assert {"out_dir", "no_progress"} <= run - status


def test_status_and_runs_show_start_without_torch(stored: Path, tmp_path: Path) -> None:
    shutil.copy(stored, tmp_path / STORE)
    kd = _spec(stored, "kd")
    status = cdkd(["status", "--store", STORE], tmp_path / "cache", tmp_path)
    show = cdkd(["runs", "show", kd.run_id[:8], "--store", STORE], tmp_path / "cache", tmp_path)
    assert (status.status, show.status) == (0, 0), status.err + show.err
    assert (status.imported, show.imported) == ([], [])
    assert "5 done, 1 failed, 0 running" in status.out and f"run {kd.run_id}: done" in show.out
