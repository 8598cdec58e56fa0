"""The ray executor: the local executor's scheduling on Ray tasks, the same numbers, and one sentence for each setup mistake."""

from __future__ import annotations

import dataclasses
import sqlite3
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from helpers import KillsItsWorker

import cdkd_bench.jobs
from cdkd_bench import hookimpl
from cdkd_bench.api import Job
from cdkd_bench.errors import UserError
from cdkd_bench.grid import GridRequest, expand, run_grid
from cdkd_bench.jobs import use_host
from cdkd_bench.plugins import load_host
from cdkd_bench.settings import EngineSettings
from cdkd_bench.store import Store
from cdkd_plugins.executors.ray_cluster import ADDRESS_ENV, RayExecutor

UNKNOWN_KIND = {"status": "failed", "error": "unknown job kind 'unknown'; expected 'teacher', 'run' or 'ensemble'"}


@pytest.fixture
def fresh_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """No grid host left behind by another test (its in-code plugins would be refused), no cluster named."""
    monkeypatch.setattr(cdkd_bench.jobs, "_process_host", None)
    monkeypatch.delenv(ADDRESS_ENV, raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


def _collect(results: dict[int, dict[str, Any]], order: list[int]) -> Callable[[int, Mapping[str, Any]], None]:
    def on_result(index: int, result: Mapping[str, Any]) -> None:
        assert index not in results, f"job {index} reported twice"
        results[index] = dict(result)
        order.append(index)
    return on_result


class _InCodeRay(RayExecutor):
    name = "ray_in_code"


class _InCodePlugin:
    @hookimpl
    def cdkd_register_executors(self, register):  # type: ignore[no-untyped-def]
        register(_InCodeRay)


def test_a_grid_whose_plugins_were_given_in_code_is_refused_in_one_sentence(tmp_path: Path, fresh_process: None) -> None:
    host = load_host(extra_plugins=[("in_code", _InCodePlugin())])
    use_host(host)  # as run_grid does
    executor = host.executors.get("ray_in_code")()
    with pytest.raises(UserError) as refused:
        executor.run([Job("unknown", 0, EngineSettings(tmp_path))], lambda *_: pytest.fail("nothing may run"))
    message = str(refused.value)
    assert "plugins given in code" in message and "local executor" in message and "\n" not in message


def test_an_address_that_does_not_answer_is_one_sentence_within_seconds(tmp_path: Path, fresh_process: None,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    ray = pytest.importorskip("ray")
    monkeypatch.setenv(ADDRESS_ENV, "127.0.0.1:1")
    start = time.monotonic()
    with pytest.raises(UserError) as refused:
        RayExecutor().run([Job("unknown", 0, EngineSettings(tmp_path))], lambda *_: pytest.fail("nothing may run"))
    assert time.monotonic() - start < 30
    message = str(refused.value)
    assert "'127.0.0.1:1' does not answer" in message and ADDRESS_ENV in message and "\n" not in message
    assert not ray.is_initialized()


def test_without_ray_installed_the_executor_says_how_to_install_it(tmp_path: Path, fresh_process: None,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(UserError, match=r"^the ray executor needs Ray: pip install 'cdkd-bench\[ray\]'$"):
        RayExecutor().run([Job("unknown", 0, EngineSettings(tmp_path))], lambda *_: pytest.fail("nothing may run"))


@pytest.mark.slow
def test_ray_tasks_keep_the_job_order_and_a_task_that_dies_fails_only_its_own_job(tmp_path: Path, fresh_process: None) -> None:
    pytest.importorskip("ray")
    settings = EngineSettings(tmp_path, device="cpu", threads=1, workers=2)
    # Job kinds the engine does not know come back as failed results from run_job in the Ray worker: cheap, real work.
    jobs = [Job("run", KillsItsWorker(), settings), Job("unknown", 1, settings), Job("unknown", 2, settings, after=(0,)),
            Job("unknown", 3, settings, after=(2,))]
    asked: list[int] = []
    results: dict[int, dict[str, Any]] = {}
    order: list[int] = []

    def ready(index: int) -> dict[str, Any] | None:
        asked.append(index)
        return {"status": "elsewhere"} if index == 3 else None

    RayExecutor().run(jobs, _collect(results, order), ready)
    assert sorted(asked) == [0, 1, 2, 3] and sorted(results) == [0, 1, 2, 3]
    assert order.index(0) < order.index(2) < order.index(3) and asked.index(2) > order.index(0)
    assert results[0]["status"] == "failed" and results[0]["error"].startswith("its Ray task failed: ")
    assert "\n" not in results[0]["error"] and results[0]["traceback"] is None
    assert results[1] == results[2] == UNKNOWN_KIND and results[3] == {"status": "elsewhere"}


def _stored_metrics(path: Path) -> dict[str, str]:
    with sqlite3.connect(path) as db:
        return dict(db.execute("SELECT run_id, metrics FROM runs WHERE status = 'done'").fetchall())


@pytest.mark.slow
def test_a_grid_on_ray_stores_the_numbers_of_the_local_executor(host, fresh_process: None, request: pytest.FixtureRequest) -> None:
    pytest.importorskip("ray")
    if "ray" not in host.executors:
        pytest.skip("the ray executor is not installed: pyproject.toml's cdkd_bench entry points need "
                    "`ray = \"cdkd_plugins.executors.ray_cluster\"` (then reinstall)")
    cache_dir: Path = request.getfixturevalue("cache_dir")  # the embedded data, generated only when the test runs
    specs = expand(host, GridRequest(suite="embedded", tasks=("printed_to_handwritten",), recipes=("kd",), seeds=(0,),
                                     budget="smoke", device="cpu", threads=1))
    stored = {}
    for executor in ("ray", "local"):
        for teacher in (cache_dir / "teachers").glob("*.pt"):  # each executor trains and computes everything
            teacher.unlink()
        path = cache_dir.parent / f"{executor}.sqlite"
        summary = run_grid(host, specs, Store(path), EngineSettings(cache_dir, device="cpu", threads=1, workers=2),
                           executor_name=executor, show_progress=False, log=lambda _message: None)
        assert (summary.done, summary.failed, summary.elsewhere) == (len(specs), 0, 0), summary.failures
        stored[executor] = _stored_metrics(path)
    assert set(stored["ray"]) == {spec.run_id for spec in specs}
    assert stored["ray"] == stored["local"]  # target_test.acc and every other metric, run by run


def test_a_cuda_job_asks_ray_for_its_share_of_a_gpu_and_a_cpu_job_for_none(host, tmp_path: Path) -> None:
    from cdkd_plugins.executors.ray_cluster import _for_ray

    spec = expand(host, GridRequest(tasks=("printed_to_handwritten",), recipes=("kd",), seeds=(0,), budget="smoke"), tmp_path)[0]
    cuda_spec = dataclasses.replace(spec, numerics="cuda bf16")
    packed = EngineSettings(cache_dir=tmp_path, device="auto", runs_per_device=4)
    job, gpus = _for_ray(Job("run", cuda_spec, packed))
    assert gpus == 0.25 and job.settings.device == "cuda"
    job, gpus = _for_ray(Job("run", spec, packed))  # planned on the CPU
    assert gpus == 0.0 and job.settings.device == "cpu"
