"""What every built-in component must respect inside the engine's training loop: under `uda` no
component ever sees a target label, and no component ever changes the teacher."""

from __future__ import annotations

import copy

import torch
from distillation_helpers import IMAGE_SIZE, NUM_CLASSES, real_pair
from helpers import SpyOnTarget

from cdkd_bench.api import MethodInfo
from cdkd_bench.data import Split
from cdkd_bench.hparams import build_hparams
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
