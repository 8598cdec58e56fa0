"""Adapted teachers: what may adapt a teacher, what its cache key holds, that it is trained once and
shared, and that tables keep its runs apart while still showing the source teacher beside it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from helpers import ContractV2Methods

from cdkd_bench.engine import EngineSettings
from cdkd_bench.errors import UserError
from cdkd_bench.grid import GridRequest, expand, read_grid_file, run_grid
from cdkd_bench.leaderboard import build_tables, render_markdown
from cdkd_bench.plugins import load_host
from cdkd_bench.spec import TeacherSpec, digest
from cdkd_bench.store import Store
from cdkd_bench.teachers import check_teacher_recipe, teacher_path

TASKS = ("printed_to_handwritten", "printed_to_street")


def test_a_teacher_recipe_is_source_or_adaptation_components(host) -> None:
    assert check_teacher_recipe("source", host.methods) == "source"
    assert check_teacher_recipe("mcc+dann", host.methods) == "dann+mcc"
    for bad, culprit in (("kd", "kd"), ("dann+kd", "kd"), ("source_only", "source_only"), ("target_oracle", "target_oracle")):
        with pytest.raises(UserError, match=f"names '{culprit}', which is not an adaptation component"):
            check_teacher_recipe(bad, host.methods)
    with pytest.raises(UserError, match="did you mean 'dann'"):
        check_teacher_recipe("dannn", host.methods)


def test_two_components_that_own_the_step_cannot_adapt_a_teacher() -> None:
    v2_host = load_host(extra_plugins=[("contract-v2", ContractV2Methods())])
    with pytest.raises(UserError, match="teacher recipe 'another_owner\\+two_phase' has two components that own the training step"):
        expand(v2_host, GridRequest(tasks=TASKS[:1], teacher_recipe="two_phase+another_owner", seeds=(0,), budget="smoke"))


def test_a_source_teacher_keeps_the_key_it_had_before_teachers_could_be_adapted() -> None:
    teacher = TeacherSpec(suite="s", source="a", source_version=1, arch="net", teacher_recipe="source", pretrained=False,
                          num_classes=10, image_size=32, steps=5, batch_size=4, lr=0.1, weight_decay=0.0, seed=0,
                          augmentation=None, numerics="cpu", source_data="abc")
    # The fields as they were, spelled out: cached source teachers and stored run ids stay valid.
    before = {"suite": "s", "source": "a", "source_version": 1, "arch": "net", "teacher_recipe": "source", "pretrained": False,
              "num_classes": 10, "image_size": 32, "steps": 5, "batch_size": 4, "lr": 0.1, "weight_decay": 0.0, "seed": 0,
              "augmentation": None, "numerics": "cpu", "source_data": "abc", "protocol": teacher.protocol}
    assert teacher.key == digest(before)
    adapted = dataclasses.replace(teacher, teacher_recipe="dann", target="b", target_data="def")
    assert adapted.key != teacher.key and adapted.to_dict()["target"] == "b"


def test_adapted_teachers_depend_on_target_recipe_and_hparams_and_only_teacher_readers_repeat(host) -> None:
    request = GridRequest(tasks=TASKS, recipes=("kd", "mcc"), teacher_recipe=("source", "dann"), seeds=(0,), budget="smoke")
    specs = expand(host, request)
    ran = {(s.teacher.teacher_recipe, s.task.split(".")[-1], s.recipe) for s in specs}
    for task in TASKS:
        assert {("source", task, r) for r in ("source_only", "kd", "mcc", "target_oracle")} <= ran
        assert {("dann", task, r) for r in ("source_only", "kd", "target_oracle")} <= ran
        assert ("dann", task, "mcc") not in ran  # mcc never reads the teacher: it runs once
    adapted = {s.task: s.teacher for s in specs if s.teacher.teacher_recipe == "dann"}
    first, second = (adapted[f"embedded.{t}"] for t in TASKS)
    assert first.source == second.source and first.key != second.key  # one source, two targets: two teachers
    assert first.target == "embedded.handwritten" and first.target_evaluation == "transductive"
    assert second.target_evaluation == "test split" and second.target_data
    assert set(first.recipe_hparams) == {"dann"} and first.recipe_hparams["dann"]["gamma"] == 10.0
    assert first.recipe_versions == {"dann": host.methods.get("dann").version}
    changed = expand(host, dataclasses.replace(request, hparams={"dann.weight": 0.5}))
    assert {s.teacher.key for s in changed if s.teacher.teacher_recipe == "dann"}.isdisjoint({first.key, second.key})
    assert {s.teacher.key for s in changed if s.teacher.adapted is False} == {s.teacher.key for s in specs if not s.teacher.adapted}


def test_an_adapted_teacher_is_trained_once_shared_and_tabled_apart(host, cache_dir: Path, tmp_path: Path) -> None:
    settings = EngineSettings(cache_dir=cache_dir, device="cpu")
    store = Store(tmp_path / "results.sqlite")
    request = GridRequest(tasks=TASKS[:1], recipes=("kd",), teacher_recipe=("source", "dann"), seeds=(0,), budget="smoke")
    specs = expand(host, request, cache_dir)
    summary = run_grid(host, specs, store, settings, show_progress=False, log=lambda _: None)
    assert (summary.teachers_trained, summary.done, summary.failed) == (2, len(specs), 0)
    adapted = next(s.teacher for s in specs if s.teacher.adapted)
    cached = teacher_path(settings, adapted).read_bytes()

    again = expand(host, dataclasses.replace(request, recipes=("progressive_kd",), teacher_recipe=("dann",)), cache_dir)
    assert {s.teacher.key for s in again} == {adapted.key}
    second = run_grid(host, again, store, settings, show_progress=False, log=lambda _: None)
    assert second.teachers_trained == 0 and second.failed == 0 and second.done == 1  # the references ran already
    assert teacher_path(settings, adapted).read_bytes() == cached

    tables = build_tables(store.runs(), host)
    by_recipe = {t.protocol.teacher_recipe: t for t in tables}
    assert set(by_recipe) == {"source", "dann"}
    rows = {row.name: row for row in by_recipe["dann"].rows}
    assert {"teacher", "source teacher", "kd", "progressive_kd", "source_only", "target_oracle"} <= set(rows)
    assert "source teacher" not in {row.name for row in by_recipe["source"].rows}
    source_teacher = next(r for r in by_recipe["source"].rows if r.name == "teacher")
    assert rows["source teacher"].values == source_teacher.values
    page = render_markdown(tables, "embedded", host)
    assert "## Teacher `resnet18_w16_32px` adapted by `dann`" in page
    assert "adapted to the target by `dann` with unlabelled target images" in page


def test_the_shipped_families_grid_expands_to_the_three_families(host, cache_dir: Path) -> None:
    grid = Path(__file__).parent.parent / "grids" / "cross-domain-families.toml"
    specs = expand(host, GridRequest(**read_grid_file(grid)), cache_dir)
    by_teacher: dict[str, set[str]] = {}
    for spec in specs:
        by_teacher.setdefault(spec.teacher.teacher_recipe, set()).add(spec.recipe)
    assert set(by_teacher) == {"source", "mcd"}
    assert {"dann", "mcd", "fixmatch", "kd", "kd+mcd", "progressive_kd", "source_only"} <= by_teacher["source"]
    assert by_teacher["mcd"] == {"kd", "kd+mcd", "progressive_kd", "source_only", "target_oracle"}
