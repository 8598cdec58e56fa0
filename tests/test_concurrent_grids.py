"""Two identical grids started together on one store split the work: nothing runs twice, nothing is lost."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

GRID = ["run", "--budget", "smoke", "--tasks", "printed_to_handwritten,textured_to_handwritten", "--seeds", "0,1",
        "--no-progress", "--store", "shared.sqlite", "--threads", "1"]
RUNS = 2 * 3 * 2          # tasks x (source_only, kd, target_oracle) x seeds
TEACHERS = 2 * 2          # sources x seeds


def test_two_identical_grids_on_one_store_do_each_run_and_teacher_once(cache_dir: Path) -> None:
    env = {**os.environ, "CDKD_BENCH_CACHE": str(cache_dir)}
    command = [sys.executable, "-c", "import sys; from cdkd_bench.cli import main; sys.exit(main(sys.argv[1:]))", *GRID]
    processes = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs

    summaries = []
    for _, err in outputs:
        match = re.search(r"grid: (\d+) done, (\d+) failed, (\d+) already done(?:, (\d+) left to another process)?; "
                          r"(\d+) teachers trained", err)
        assert match, err
        summaries.append([int(g or 0) for g in match.groups()])
    done, failed, _, _, trained = (sum(column) for column in zip(*summaries, strict=True))
    assert (done, failed) == (RUNS, 0), outputs          # every run done exactly once between them
    assert trained == TEACHERS, outputs                  # every teacher trained exactly once between them
    assert not any("finished it first" in err for _, err in outputs)

    with sqlite3.connect(Path("shared.sqlite")) as db:
        rows = db.execute("SELECT status, COUNT(*) FROM runs GROUP BY status").fetchall()
        claims = db.execute("SELECT COUNT(*) FROM claims").fetchone()[0]
    assert rows == [("done", RUNS)] and claims == 0
    teacher_files = [p for p in (cache_dir / "teachers").glob("*.pt") if "-outputs-" not in p.name]
    assert len(teacher_files) == TEACHERS
