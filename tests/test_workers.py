"""The local executor's worker processes and job order: dependencies, crashes, identical numbers."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from helpers import KillsItsWorker

from cdkd_bench.api import Job
from cdkd_bench.cli import main
from cdkd_bench.grid import GridRequest, estimated_costs, expand
from cdkd_bench.settings import EngineSettings
from cdkd_bench.workers import run_in_this_process, run_on_workers


def _jobs(afters: list[tuple[int, ...]], settings: EngineSettings) -> list[Job]:
    return [Job("noop", index, settings, after=after) for index, after in enumerate(afters)]


def test_a_job_starts_only_after_every_job_it_waits_for_has_reported(tmp_path: Path) -> None:
    jobs = _jobs([(2,), (), (1,), (0, 2)], EngineSettings(tmp_path))
    started: list[int] = []
    reported: list[int] = []
    run_in_this_process(jobs, lambda index, _result: reported.append(index),
                        None, lambda job: started.append(job.spec) or {"status": "done"})
    # 0 waits for 2, which waits for 1; 3 for both 0 and 2. Among startable jobs the list order wins.
    assert started == [1, 2, 0, 3] and reported == started


def test_a_job_answered_by_ready_is_reported_without_running_and_still_unblocks_its_dependants(tmp_path: Path) -> None:
    jobs = _jobs([(), (0,)], EngineSettings(tmp_path))
    started: list[int] = []
    results: dict[int, object] = {}
    run_in_this_process(jobs, results.__setitem__, lambda index: {"status": "elsewhere"} if index == 0 else None,
                        lambda job: started.append(job.spec) or {"status": "done"})
    assert started == [1] and results == {0: {"status": "elsewhere"}, 1: {"status": "done"}}


@pytest.mark.parametrize("afters", [[(1,), (0,)], [(0,)], [(5,)]])
def test_dependencies_that_can_never_be_met_are_refused(tmp_path: Path, afters: list[tuple[int, ...]]) -> None:
    with pytest.raises(ValueError):
        run_in_this_process(_jobs(afters, EngineSettings(tmp_path)), lambda *_: None, None, lambda _job: {"status": "done"})


def test_a_worker_that_dies_fails_only_its_own_job_and_a_fresh_worker_takes_the_rest(tmp_path: Path) -> None:
    settings = EngineSettings(tmp_path, threads=1, workers=2)
    # Job kinds the engine does not know come back as failed results from run_job in the worker: cheap, real work.
    jobs = [Job("run", KillsItsWorker(), settings), Job("unknown", 1, settings), Job("unknown", 2, settings, after=(0,))]
    results: dict[int, dict] = {}
    run_on_workers(jobs, lambda index, result: results.__setitem__(index, dict(result)), None, workers=2)
    assert sorted(results) == [0, 1, 2]
    assert results[0]["status"] == "failed" and "its worker process died (exit code 3)" in results[0]["error"]
    for index in (1, 2):  # the job after the crash still ran, on a worker started in the dead one's place
        assert results[index] == {"status": "failed", "error": "unknown job kind 'unknown'; expected 'teacher', 'run' or 'ensemble'"}


@pytest.mark.parametrize("parity", [False, True])
def test_a_runs_estimated_cost_counts_its_student_passes_and_teacher_passes_per_step(host, parity: bool) -> None:
    specs = expand(host, GridRequest(tasks=("printed_to_handwritten",), recipes=("kd", "fitnet+kd", "source_only"),
                                     seeds=(0,), budget="smoke", device="cpu", augmentation_parity=parity))
    cost = dict(zip([spec.recipe for spec in specs], estimated_costs(host, specs), strict=True))
    steps = specs[0].steps  # kd and the oracle also pass target batches through the student; fitnet also runs the teacher
    # Under parity every recipe with a teacher runs it on each augmented source batch.
    kd = 4 * steps if parity else 2 * steps
    assert cost == {"source_only": steps, "kd": kd, "target_oracle": 2 * steps, "fitnet+kd": 4 * steps}


def _stored(store: Path) -> dict[str, str]:
    with sqlite3.connect(store) as db:
        return {run_id: result for run_id, result in db.execute("SELECT run_id, metrics FROM runs WHERE status = 'done'")}


def test_a_grid_on_two_worker_processes_stores_the_numbers_of_one_process(cache_dir: Path, capsys) -> None:
    grid = ["run", "--budget", "smoke", "--tasks", "printed_to_handwritten", "--recipes", "source_only,kd",
            "--seeds", "0", "--device", "cpu", "--no-progress"]
    assert main([*grid, "--workers", "2", "--store", "two.sqlite", "--out-dir", "two"]) == 0
    assert "3 done, 0 failed" in capsys.readouterr().err
    for teacher in (cache_dir / "teachers").glob("*.pt"):  # the second grid trains and computes everything again
        teacher.unlink()
    assert main([*grid, "--workers", "1", "--store", "one.sqlite", "--out-dir", "one"]) == 0
    one, two = _stored(Path("one.sqlite")), _stored(Path("two.sqlite"))
    assert len(one) == 3 and one == two  # source_only, kd and the target_oracle reference row
