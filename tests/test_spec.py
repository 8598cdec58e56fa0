from __future__ import annotations

import dataclasses

import pytest

from cdkd_bench.grid import GridRequest, expand
from cdkd_bench.spec import RunSpec, canonical_json, derive_seed


def test_canonical_json_ignores_key_order() -> None:
    assert canonical_json({"b": 1, "a": [1.5, "x"]}) == canonical_json({"a": [1.5, "x"], "b": 1}) == '{"a":[1.5,"x"],"b":1}'


def test_derived_seeds_differ_by_purpose_and_are_stable() -> None:
    assert derive_seed(0, "student-init") != derive_seed(0, "teacher-init")
    assert derive_seed(0, "student-init") == derive_seed(0, "student-init")


@pytest.fixture
def specs(host) -> list[RunSpec]:
    request = GridRequest(tasks=("printed_to_handwritten", "printed_to_textured", "textured_to_printed"), seeds=(0, 1), budget="smoke")
    return expand(host, request)


def test_run_ids_are_unique_across_the_grid(specs: list[RunSpec]) -> None:
    assert len({s.run_id for s in specs}) == len(specs) == 3 * 2 * 3


def test_spec_round_trips_through_its_dict(specs: list[RunSpec]) -> None:
    for spec in specs:
        again = RunSpec.from_dict(spec.to_dict())
        assert again == spec and again.run_id == spec.run_id


def test_changing_any_field_changes_the_hash(specs: list[RunSpec]) -> None:
    spec = specs[0]
    for change in ({"seed": 7}, {"steps": spec.steps + 1}, {"recipe": "kd"}, {"hparams": {"kd": {"temperature": 2.0}}},
                   {"method_versions": {"source_only": 2}}):
        assert dataclasses.replace(spec, **change).run_id != spec.run_id


def test_teacher_depends_on_source_arch_seed_and_budget_not_on_target_or_recipe(specs: list[RunSpec]) -> None:
    keys = {}
    for spec in specs:
        keys.setdefault((spec.source, spec.seed), set()).add(spec.teacher.key)
    # printed→handwritten and printed→textured, every recipe: one teacher per (source, seed)
    assert all(len(k) == 1 for k in keys.values())
    assert len({k for ks in keys.values() for k in ks}) == 2 * 2  # two sources x two seeds
    teacher = specs[0].teacher
    assert dataclasses.replace(teacher, steps=teacher.steps + 1).key != teacher.key
    assert dataclasses.replace(teacher, arch="resnet18_w32_32px").key != teacher.key


def test_reference_recipes_join_every_grid(host) -> None:
    specs = expand(host, GridRequest(tasks=("printed_to_handwritten",), recipes=("kd",), seeds=(0,), budget="smoke"))
    assert sorted(s.recipe for s in specs) == ["kd", "source_only", "target_oracle"]


def test_recipe_order_does_not_matter(host) -> None:
    a = expand(host, GridRequest(tasks=("printed_to_handwritten",), recipes=("kd+source_only",), seeds=(0,), budget="smoke"))
    b = expand(host, GridRequest(tasks=("printed_to_handwritten",), recipes=("source_only+kd",), seeds=(0,), budget="smoke"))
    assert {s.run_id for s in a} == {s.run_id for s in b}


def test_defaults_are_resolved_into_the_spec(host) -> None:
    spec = next(s for s in expand(host, GridRequest(tasks=("printed_to_handwritten",), seeds=(0,), budget="smoke")) if s.recipe == "kd")
    assert spec.hparams == {"kd": {"temperature": 4.0, "weight": 1.0, "variant": "kl", "domains": "both"}}
    assert spec.method_versions == {"kd": 1}


def test_teacher_augmentation_is_part_of_the_teacher_key(specs: list[RunSpec]) -> None:
    teacher = specs[0].teacher
    assert teacher.augmentation is not None
    assert dataclasses.replace(teacher, augmentation=None).key != teacher.key


def test_the_embedded_specs_record_the_augmentation_fields_they_always_did(specs: list[RunSpec]) -> None:
    # The crop and mirror fields came later: at their defaults they are left out, so stored run ids stay valid.
    first_fields = {"rotation_degrees", "scale", "translate", "gain", "bias", "invert_probability"}
    for spec in specs:
        assert spec.teacher.augmentation is not None and set(spec.teacher.augmentation) == first_fields
        assert spec.source_augmentation is not None and set(spec.source_augmentation) == first_fields
        assert {"weights", "backbone_lr_mult"}.isdisjoint(spec.teacher.to_dict())
        assert {"weights", "backbone_lr_mult"}.isdisjoint(spec.to_dict()["teacher"])
        assert {"student_pretrained", "student_weights"}.isdisjoint(spec.to_dict())
