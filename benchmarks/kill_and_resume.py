"""Kill a grid with SIGKILL at random moments, start it again each time, and check that nothing finished is lost or redone.

    python benchmarks/kill_and_resume.py --kills 20 [--seed 0] [--workdir DIR]

First runs the grid once without interruption (the reference store). Then, on a second store,
starts the same command, kills its whole process group (workers included) after a random
delay, and starts it again, until it has been killed ``--kills`` times; then lets it finish.
After every kill it checks that each run finished before stays recorded exactly as it was
(same finish time: never re-run, never lost). At the end both stores must hold the same run
ids with the same metrics, and render the same leaderboard tables. Prints a summary; the
exit status is 1 if any check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# 48 runs and 9 teachers at the smoke budget: enough work that 20 kills land while runs are still pending.
GRID = ["run", "--budget", "smoke", "--tasks", "printed_to_handwritten,street_to_handwritten,handwritten_to_textured,printed_to_street",
        "--seeds", "0,1,2", "--recipes", "kd,dann", "--no-progress", "--threads", "1", "--workers", "2"]


def command(store: Path) -> list[str]:
    return [sys.executable, "-c", "import sys; from cdkd_bench.cli import main; sys.exit(main(sys.argv[1:]))",
            *GRID, "--store", str(store), "--out-dir", str(store.parent / f"{store.stem}-pages")]


def finished(store: Path) -> dict[str, tuple[str, str]]:
    """run id -> (finish time, metrics) of every finished run in the store (empty when it does not exist yet)."""
    if not store.exists():
        return {}
    with sqlite3.connect(store) as db:
        try:
            rows = db.execute("SELECT run_id, finished_at, metrics FROM runs WHERE status = 'done'").fetchall()
        except sqlite3.OperationalError:  # killed before the schema was written
            return {}
    return {run_id: (when, metrics) for run_id, when, metrics in rows}


def tables(store: Path) -> str:
    """The leaderboard's tables without the provenance lines (which name the store and the command)."""
    out = store.parent / f"{store.stem}-board"
    subprocess.run([sys.executable, "-c", "import sys; from cdkd_bench.cli import main; sys.exit(main(sys.argv[1:]))",
                    "leaderboard", "--store", str(store), "--out-dir", str(out)], check=True, capture_output=True)
    page = (out / "embedded.md").read_text()
    return "\n".join(line for line in page.splitlines() if line.startswith("|"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-delay", type=float, default=10.0, help="kill after a delay drawn uniformly from 0.5 s to this")
    parser.add_argument("--workdir", type=Path, help="where the stores go (default: a temporary folder)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as scratch:
        work = args.workdir or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "CDKD_BENCH_CACHE": str(work / "cache")}
        reference, killed_store = work / "reference.sqlite", work / "killed.sqlite"
        started = time.perf_counter()
        subprocess.run(command(reference), env=env, check=True, capture_output=True)
        print(f"reference grid: {len(finished(reference))} runs in {time.perf_counter() - started:.1f} s")
        failures, kills, lost, redone = [], 0, 0, 0
        seen: dict[str, tuple[str, str]] = {}
        while True:
            process = subprocess.Popen(command(killed_store), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                       start_new_session=True)
            if kills < args.kills:
                delay = rng.uniform(0.5, args.max_delay)
                try:
                    process.wait(timeout=delay)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)  # the grid and its workers, as `kill -9` of the group
                    process.wait()
                    kills += 1
            else:
                process.wait()
            now = finished(killed_store)
            lost += sum(1 for run_id in seen if run_id not in now)
            redone += sum(1 for run_id, record in seen.items() if run_id in now and now[run_id] != record)
            seen.update(now)
            if process.returncode is not None and process.returncode >= 0 and kills >= args.kills:
                if process.returncode != 0:
                    failures.append(f"the last, uninterrupted start exited with {process.returncode}: {process.stderr.read()[-500:]!r}")
                break
        expected, got = finished(reference), finished(killed_store)
        if set(expected) != set(got):
            failures.append(f"the killed store holds {len(got)} runs, the reference {len(expected)}")
        accuracy = {r: json.loads(metrics)["target_test.acc"] for r, (_, metrics) in expected.items()}
        differing = [r for r in expected if r in got and json.loads(got[r][1])["target_test.acc"] != accuracy[r]]
        if differing:
            failures.append(f"{len(differing)} runs have other numbers than in the reference")
        if tables(reference) != tables(killed_store):
            failures.append("the leaderboard tables differ")
        if lost or redone:
            failures.append(f"{lost} finished runs were lost and {redone} were recorded again")
        print(f"{kills} kills; {len(got)} runs finished; lost {lost}, recorded again {redone}; "
              f"{time.perf_counter() - started:.0f} s in all")
        for failure in failures:
            print("FAILED:", failure)
        return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
