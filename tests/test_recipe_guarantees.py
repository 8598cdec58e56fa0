"""What every built-in component must respect inside the engine's training loop: under `uda` no
component ever sees a target label, and no component ever changes the teacher."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import torch
from distillation_helpers import IMAGE_SIZE, NUM_CLASSES, real_pair
from helpers import SpyOnTarget

from cdkd_bench import Budget, DataContext, Domain, DomainData, Suite, hookimpl
from cdkd_bench.api import MethodInfo
from cdkd_bench.data import Split
from cdkd_bench.errors import UserError
from cdkd_bench.grid import GridRequest, expand
from cdkd_bench.hparams import build_hparams
from cdkd_bench.plugins import load_host
from cdkd_bench.recipes import view_transforms
from cdkd_bench.training import fit

BUILT_IN = "cdkd_plugins."


def _split(n: int, seed: int) -> Split:
    g = torch.Generator().manual_seed(seed)
    return Split(torch.randn(n, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g), torch.arange(n) % NUM_CLASSES)


def built_in_components(host) -> list[str]:  # type: ignore[no-untyped-def]
    return sorted(e.name for e in host.methods if e.value.__module__.startswith(BUILT_IN) and not e.value.uses_target_labels)


def test_every_adaptation_component_of_the_issue_is_registered(host) -> None:
    adaptation = {e.name for e in host.methods if e.value.family == "adaptation" and e.value.__module__.startswith(BUILT_IN)}
    assert {"dann", "cdan", "dan", "coral", "mcc", "bnm", "entmin", "im", "fixmatch", "adabn", "mcd"} <= adaptation


def test_no_component_sees_a_target_label_or_changes_the_teacher(host) -> None:
    source, target = _split(12, 0), _split(12, 1)
    names = built_in_components(host)
    assert len(names) >= 20
    for name in names:
        method = host.methods.get(name)
        student, teacher, info = real_pair(split_sizes={"source": len(source), "target": len(target)})
        info = MethodInfo(**{**vars(info), "total_steps": 2})
        teacher.requires_grad_(False)  # as the engine freezes it
        before = copy.deepcopy(teacher.state_dict())
        component = method(build_hparams(method, {}), info)
        spy = SpyOnTarget(SpyOnTarget.Hparams(), info)
        SpyOnTarget.seen_target_labels.clear()
        fit(student, [component, spy], source, target, steps=2, batch_size=6, lr=1e-3, weight_decay=0.0, seed=0,
            teacher=teacher if method.needs_teacher else None, reveal_target_labels=False,
            views=view_transforms(host.suite("embedded"), [component], 0))
        assert SpyOnTarget.seen_target_labels and all(y is None for y in SpyOnTarget.seen_target_labels), name
        after = teacher.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before), f"{name} changed the teacher"
        assert all(p.grad is None for p in teacher.parameters()), f"{name} left a gradient on the teacher"


def _images(train: int, test: int):  # type: ignore[no-untyped-def]
    def load(_context: DataContext) -> DomainData:
        g = torch.Generator().manual_seed(train + test)
        return DomainData(torch.randint(0, 255, (train, 3, 8, 8), dtype=torch.uint8, generator=g), torch.arange(train) % 10,
                          torch.randint(0, 255, (test, 3, 8, 8), dtype=torch.uint8, generator=g), torch.arange(test) % 10)
    return load


class TestOnlyTarget:
    """A suite whose target domain is a test set only: nothing unlabelled to adapt with."""

    @hookimpl
    def cdkd_register_domains(self, register):  # type: ignore[no-untyped-def]
        register(Domain("holdout.source", 10, _images(40, 10), 1, "labelled source"))
        register(Domain("holdout.test_only", 10, _images(0, 20), 1, "a test set only"))

    @hookimpl
    def cdkd_register_suites(self, register):  # type: ignore[no-untyped-def]
        register(Suite(name="holdout", domains=("holdout.source", "holdout.test_only"), num_classes=10, image_size=32,
                       budgets={"tiny": Budget(teacher_steps=2, student_steps=2, batch_size=4, lr=1e-2)}, default_budget="tiny",
                       default_teacher="resnet18_w16_32px", default_student="resnet10_w8_32px",
                       pairs=(("holdout.source", "holdout.test_only"), ("holdout.test_only", "holdout.source"))))


def test_a_component_that_needs_target_images_is_refused_where_the_target_has_none(tmp_path: Path,
                                                                                  caplog: pytest.LogCaptureFixture) -> None:
    host = load_host(extra_plugins=[("holdout", TestOnlyTarget())])
    request = GridRequest(suite="holdout", tasks=("source_to_test_only",), seeds=(0,), budget="tiny")
    for recipe, teacher_recipe in (("dann", "source"), ("adabn", "source"), ("source_only", "mcc")):
        with pytest.raises(UserError, match="has a target with no training images"):
            expand(host, dataclasses.replace(request, recipes=(recipe,), teacher_recipe=(teacher_recipe,)), tmp_path)
    with caplog.at_level("WARNING", logger="cdkd_bench"):
        specs = expand(host, dataclasses.replace(request, recipes=("source_only",)), tmp_path)
    assert [s.recipe for s in specs] == ["source_only"]  # the oracle has no target labels to learn from here
    assert any("target_oracle does not run there" in r.getMessage() for r in caplog.records)


def test_a_test_only_domain_cannot_be_a_source(tmp_path: Path) -> None:
    host = load_host(extra_plugins=[("holdout", TestOnlyTarget())])
    with pytest.raises(UserError, match="source 'holdout.test_only' has no training images"):
        expand(host, GridRequest(suite="holdout", tasks=("test_only_to_source",), recipes=("kd",), seeds=(0,)), tmp_path)
