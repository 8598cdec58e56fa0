"""`--compile`: the captured training step computes what the eager step computes, and is its own numerics."""

from __future__ import annotations

import pytest
import torch

from cdkd_bench.compute import COMPILE_BACKEND_ENV
from cdkd_bench.engine import EngineSettings, execute, execute_safely
from cdkd_bench.grid import GridRequest, expand
from cdkd_bench.plan import _planning_info
from cdkd_bench.training import fit


def _spec(host, recipe: str, compiled: bool):
    specs = expand(host, GridRequest(tasks=("printed_to_handwritten",), recipes=(recipe,), seeds=(0,), budget="smoke",
                                     device="cpu", threads=1, compile=compiled))
    return next(s for s in specs if s.recipe == recipe)


def test_a_compiled_grid_is_its_own_numerics_and_refuses_to_run_eagerly(host, cache_dir, monkeypatch) -> None:
    monkeypatch.setenv(COMPILE_BACKEND_ENV, "aot_eager")
    compiled, eager = _spec(host, "kd", True), _spec(host, "kd", False)
    assert compiled.numerics == "cpu fp32 1 thread, compiled (aot_eager)" and eager.numerics == "cpu fp32 1 thread"
    assert compiled.run_id != eager.run_id and compiled.teacher.key != eager.teacher.key
    result = execute_safely(lambda: execute(compiled, host, EngineSettings(cache_dir=cache_dir, device="cpu", threads=1)))
    assert result["status"] == "failed" and "would run as 'cpu fp32 1 thread'" in result["error"]


# kd runs in the slow env (time); fitnet: the captured graph returns intermediate maps too
@pytest.mark.parametrize("recipe", [pytest.param("kd", marks=pytest.mark.slow), "fitnet+kd"])
def test_the_captured_step_trains_the_student_the_eager_step_trains(host, cache_dir, monkeypatch, recipe) -> None:
    monkeypatch.setenv(COMPILE_BACKEND_ENV, "aot_eager")  # graph capture and traced autograd, without generated code
    from cdkd_bench.engine import build_components
    from cdkd_bench.task_data import load_task_data
    from cdkd_bench.teachers import obtain_teacher

    spec = _spec(host, recipe, False)
    settings = EngineSettings(cache_dir=cache_dir, device="cpu", threads=1)
    cpu = torch.device("cpu")
    data = load_task_data(host, spec, settings, cpu)
    teacher, _, _ = obtain_teacher(host, spec.teacher, data.source_train, data.source_val, settings, cpu)
    info = _planning_info(host, host.suite(spec.suite), spec.teacher.arch, spec.student_arch)[0]
    weights = []
    for compile_step in (False, True):
        torch.manual_seed(0)
        student = host.architecture(spec.student_arch, 10).to(memory_format=torch.channels_last)
        torch.manual_seed(1)
        components = build_components(host, spec, info, cpu)
        fit(student, components, data.source_train, data.target_train, steps=4, batch_size=32, lr=1e-2, weight_decay=5e-4, seed=0,
            teacher=teacher, compile_step=compile_step)
        weights.append(student.state_dict())
    for name, value in weights[0].items():
        torch.testing.assert_close(weights[1][name], value, rtol=1e-4, atol=1e-5, msg=f"{name} differs when compiled")


@pytest.mark.slow
def test_a_run_compiled_with_inductor_reaches_the_eager_runs_accuracy(host, cache_dir, monkeypatch) -> None:
    monkeypatch.delenv(COMPILE_BACKEND_ENV, raising=False)
    results = {}
    for compiled in (False, True):
        settings = EngineSettings(cache_dir=cache_dir, device="cpu", threads=1, compile=compiled)
        results[compiled] = execute(_spec(host, "kd", compiled), host, settings)["metrics"]
    assert results[True]["target_test.acc"] == pytest.approx(results[False]["target_test.acc"], abs=3.0)
