from __future__ import annotations

import copy
from functools import partial

import pytest
import torch
from helpers import SpyOnTarget, TestMethods

from cdkd_bench.engine import EngineSettings, execute, execute_safely
from cdkd_bench.grid import GridRequest, expand
from cdkd_bench.plugins import load_host
from cdkd_bench.task_data import load_task_data
from cdkd_bench.teachers import obtain_teacher, teacher_path
from cdkd_bench.training import fit

TASKS = ("printed_to_handwritten", "printed_to_textured")


@pytest.fixture(scope="module")
def test_host():
    return load_host(extra_plugins=[("test-methods", TestMethods())])


def specs_for(host, recipes=("kd",), tasks=TASKS, seeds=(0,)):
    return expand(host, GridRequest(tasks=tasks, recipes=recipes, seeds=seeds, budget="smoke"))


def pick(specs, recipe, task=None):
    return next(s for s in specs if s.recipe == recipe and (task is None or s.task.endswith(task)))


def test_teacher_is_trained_once_and_reused_by_every_run_sharing_its_source(test_host, cache_dir) -> None:
    settings = EngineSettings(cache_dir=cache_dir, device="cpu")
    specs = specs_for(test_host)
    first = execute(pick(specs, "kd", TASKS[0]), test_host, settings)
    assert first["teacher_trained"] is True
    assert teacher_path(settings, specs[0].teacher).is_file()
    for other in (pick(specs, "kd", TASKS[1]), pick(specs, "source_only", TASKS[1]), pick(specs, "target_oracle", TASKS[0])):
        result = execute(other, test_host, settings)
        assert result["teacher_trained"] is False
        assert result["timings"]["teacher_train_s"] == 0.0
        assert result["metrics"]["teacher.source_val.acc"] == first["metrics"]["teacher.source_val.acc"]


def test_same_spec_gives_the_same_numbers(test_host, cache_dir) -> None:
    settings = EngineSettings(cache_dir=cache_dir, device="cpu")
    spec = pick(specs_for(test_host), "kd", TASKS[0])
    first, second = execute(spec, test_host, settings), execute(spec, test_host, settings)
    assert first["teacher_trained"] and not second["teacher_trained"]
    assert first["metrics"] == second["metrics"]


def test_kd_updates_the_student_and_never_the_teacher(test_host, cache_dir) -> None:
    settings = EngineSettings(cache_dir=cache_dir, device="cpu")
    spec = pick(specs_for(test_host), "kd", TASKS[0])
    data = load_task_data(test_host, spec, settings, torch.device("cpu"))
    teacher, _, _ = obtain_teacher(test_host, spec.teacher, data.source_train, data.source_val, settings, torch.device("cpu"))
    teacher_before = copy.deepcopy(teacher.state_dict())
    student = test_host.architecture(spec.student_arch, 10)
    student_before = copy.deepcopy(student.state_dict())
    from cdkd_bench import MethodInfo
    from cdkd_plugins.methods.kd import KD

    kd = KD(KD.Hparams(), MethodInfo(10, 64, 128, 5))
    fit(student, [kd], data.source_train, data.target_train, steps=5, batch_size=16, lr=1e-2,
        weight_decay=0.0, seed=0, teacher=teacher)
    assert all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    for name, value in teacher.state_dict().items():
        assert torch.equal(value, teacher_before[name]), f"teacher tensor {name} changed"
    changed = [n for n, v in student.state_dict().items() if v.dtype.is_floating_point and not torch.equal(v, student_before[n])]
    assert "fc.weight" in changed and "conv1.weight" in changed


def test_target_labels_are_withheld_under_uda(test_host, cache_dir) -> None:
    settings = EngineSettings(cache_dir=cache_dir, device="cpu")
    SpyOnTarget.seen_target_labels.clear()
    execute(pick(specs_for(test_host, recipes=("spy",)), "spy", TASKS[0]), test_host, settings)
    assert SpyOnTarget.seen_target_labels and all(y is None for y in SpyOnTarget.seen_target_labels)


def test_the_oracle_row_is_the_only_one_that_sees_target_labels(test_host, cache_dir) -> None:
    settings = EngineSettings(cache_dir=cache_dir, device="cpu")
    SpyOnTarget.seen_target_labels.clear()
    execute(pick(specs_for(test_host, recipes=("spy+target_oracle",)), "spy+target_oracle", TASKS[0]), test_host, settings)
    assert all(y is not None for y in SpyOnTarget.seen_target_labels)


def test_a_non_finite_loss_fails_the_run_with_a_sentence(test_host, cache_dir) -> None:
    settings = EngineSettings(cache_dir=cache_dir, device="cpu")
    spec = pick(specs_for(test_host, recipes=("diverges",)), "diverges", TASKS[0])
    result = execute_safely(partial(execute, spec, test_host, settings))
    assert result["status"] == "failed"
    assert result["error"].startswith("the loss became nan by step 0")


def test_metrics_cover_the_protocol(test_host, cache_dir) -> None:
    settings = EngineSettings(cache_dir=cache_dir, device="cpu")
    metrics = execute(pick(specs_for(test_host), "kd", TASKS[0]), test_host, settings)["metrics"]
    for key in ("target_test.acc", "target_test.balanced_acc", "source_val.acc", "teacher.target_test.acc",
                "teacher.source_val.acc", "teacher_student_agreement", "student.params", "teacher.params", "student.macs",
                "teacher.macs", "target_train.entropy", "target_train.info_max", "target_train.snd", "target_train.bnm"):
        assert key in metrics
    assert len(metrics["target_test.per_class_acc"]) == 10
    assert 0 <= metrics["target_test.acc"] <= 100
    assert metrics["student.macs"] < metrics["teacher.macs"]  # the student is the smaller network
    assert "target_val.acc" not in metrics  # only a regime with labelled target validation images scores it


def test_the_thread_count_is_part_of_run_and_teacher_identity(test_host) -> None:
    one = expand(test_host, GridRequest(tasks=TASKS[:1], recipes=("kd",), seeds=(0,), budget="smoke", threads=1, device="cpu"))
    two = expand(test_host, GridRequest(tasks=TASKS[:1], recipes=("kd",), seeds=(0,), budget="smoke", threads=2, device="cpu"))
    assert one[0].numerics == "cpu fp32 1 thread" and two[0].numerics == "cpu fp32 2 threads"
    assert {s.run_id for s in one}.isdisjoint(s.run_id for s in two)
    assert one[0].teacher.key != two[0].teacher.key


def test_a_run_computes_with_the_threads_its_identity_names_whatever_the_process_had(test_host, cache_dir) -> None:
    spec = pick(expand(test_host, GridRequest(tasks=TASKS[:1], recipes=("kd",), seeds=(0,), budget="smoke", threads=1,
                                              device="cpu")), "kd")
    settings = EngineSettings(cache_dir=cache_dir, device="cpu", threads=1)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        first = execute(spec, test_host, settings)
        assert torch.get_num_threads() == 1
        for path in (cache_dir / "teachers").glob("*.pt"):
            path.unlink()  # the teacher is trained again, from a process that had other settings
        torch.set_num_threads(2)
        second = execute(spec, test_host, settings)
    finally:
        torch.set_num_threads(previous)
    assert second["teacher_trained"] and first["metrics"] == second["metrics"]


def test_a_run_planned_for_other_numerics_is_refused(test_host, cache_dir) -> None:
    spec = pick(expand(test_host, GridRequest(tasks=TASKS[:1], recipes=("kd",), seeds=(0,), budget="smoke", threads=2,
                                              device="cpu")), "kd")
    result = execute_safely(partial(execute, spec, test_host, EngineSettings(cache_dir=cache_dir, device="cpu", threads=1)))
    assert result["status"] == "failed"
    assert result["error"] == ("this work was planned for 'cpu fp32 2 threads' but would run as 'cpu fp32 1 thread'; "
                               "run the grid again with matching settings")
