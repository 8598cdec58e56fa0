"""A whole grid from the command line, one worker against two (tox -e bench only: it takes minutes).

Each round is `cdkd-bench run` at the smoke budget on two tasks, in a subprocess with a fresh
cache, store and leaderboard folder, so every round pays for the data, the teachers and
process start-up alike. Rounds alternate between --workers 1 and --workers 2; the table row
is the two-worker side, and the ratio of the medians (2 workers / 1) is printed and stored
in its extra_info. Both must finish cleanly and store the same metrics for every run.
"""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROUNDS = 2
GRID = ["run", "--budget", "smoke", "--tasks", "printed_to_handwritten,handwritten_to_printed", "--seeds", "0", "--no-progress"]
# The console script beside this interpreter: the installed `cdkd-bench`, under tox as in the .venv.
CLI = Path(sys.executable).with_name("cdkd-bench")


def run_grid(folder: Path, workers: int) -> dict[str, Any]:
    """One whole grid in ``folder`` (nothing shared with other rounds); each done run's stored metrics by run id."""
    folder.mkdir()
    env = {**os.environ, "CDKD_BENCH_CACHE": str(folder / "cache")}
    store = folder / "results.sqlite"
    command = [str(CLI), *GRID, "--workers", str(workers), "--store", str(store), "--out-dir", str(folder / "leaderboards")]
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"--workers {workers} ended with status {done.returncode}:\n{done.stderr[-3000:]}"
    with sqlite3.connect(store) as db:
        rows = db.execute("SELECT run_id, metrics FROM runs WHERE status='done'").fetchall()
    return {run_id: json.loads(metrics) for run_id, metrics in rows}


@pytest.mark.bench_only
@pytest.mark.benchmark(group="whole smoke grid, 2 tasks (ratio to 1 worker in extra_info)")
def test_whole_grid_one_worker_against_two(benchmark, alternate, tmp_path: Path) -> None:
    assert CLI.exists(), f"no cdkd-bench console script beside {sys.executable}"
    rounds = itertools.count()
    comparison = alternate(lambda: tmp_path / f"round-{next(rounds)}",
                           lambda folder: run_grid(folder, 1), lambda folder: run_grid(folder, 2),
                           names=("workers_1", "workers_2"), rounds=ROUNDS)
    comparison.report(benchmark, "whole smoke grid, 2 tasks")

    one, two = comparison.baseline_result, comparison.measured_result
    assert one, "the grid stored no finished runs"
    assert one.keys() == two.keys(), "the two configurations finished different runs"
    for run_id, metrics in one.items():
        assert two[run_id] == metrics, f"run {run_id} stored other metrics with 2 workers than with 1"
