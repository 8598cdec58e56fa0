"""Stored runs made by hand, with chosen numbers, for the leaderboard's formats: no training and no data needed.

``LEADERBOARD`` is a table whose significance markers are known in advance (see its comments);
``RunList`` is a results store reduced to the two questions a leaderboard asks of one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cdkd_bench.spec import RunSpec, TeacherSpec
from cdkd_bench.store import StoredRun

TASKS = ("printed_to_handwritten", "handwritten_to_printed")
SEEDS = (0, 1, 2, 3)
PROVENANCE = {"cdkd_bench": "0.1.0", "torch": "2.14.1", "timm": "1.0.31", "device": "cpu (x86_64, 1 thread)",
              "command": "cdkd-bench run --budget smoke --seeds 0,1,2,3"}
COMPUTE = {"student.params": 45_210, "student.macs": 1_234_567, "teacher.params": 181_000, "teacher.macs": 5_000_000}


def base(task: int, seed: int) -> float:
    return 40.0 + 10 * task + seed


# Target accuracy per recipe, task index and seed. Every difference below is distinct, so that scipy's
# Wilcoxon test is exact (no ties) and the tests can enumerate the same distribution themselves.
LEADERBOARD = {
    "source_only": base,
    # kd beats source_only on all 8 (task, seed) cells
    "kd": lambda t, s: base(t, s) + 3 + 0.5 * s + 0.2 * t,
    # nkd beats kd on all 8 cells (so source_only too)
    "nkd": lambda t, s: base(t, s) + 3 + 0.5 * s + 0.2 * t + 2 + 0.25 * s + 0.1 * t,
    # fitnet wins and loses against source_only by turns, and loses to kd on every cell: a tiny p, the wrong way
    "fitnet": lambda t, s: base(t, s) + (-1) ** s * (1 + 0.7 * s) + 0.5 * t,
    "target_oracle": lambda t, s: 95.0 + s,
}


def spec(recipe: str, task: str, seed: int, budget: str = "smoke") -> RunSpec:
    source, target = (f"embedded.{name}" for name in task.split("_to_"))
    teacher = TeacherSpec(suite="embedded", source=source, source_version=2, arch="resnet18_w16_32px", teacher_recipe="source",
                          pretrained=False, num_classes=10, image_size=32, steps=20, batch_size=32, lr=0.01, weight_decay=5e-4,
                          seed=seed, numerics="cpu fp32 1 thread", source_data=f"{source[9:]}-hash")
    return RunSpec(suite="embedded", task=f"embedded.{task}", source=source, target=target, target_version=2, teacher=teacher,
                   student_arch="resnet10_w8_32px", recipe=recipe, hparams={c: {} for c in recipe.split("+")},
                   method_versions={c: 1 for c in recipe.split("+")}, label_regime="uda", budget=budget, steps=10,
                   batch_size=32, lr=0.01, weight_decay=5e-4, seed=seed, numerics="cpu fp32 1 thread", eval_points=2,
                   target_data=f"{target[9:]}-hash")


def stored(recipe: str, task: str, seed: int, accuracy: float | None, *, compute: bool = True, early: float | None = None,
           budget: str = "smoke") -> StoredRun:
    """A finished run (``accuracy`` at its last checkpoint, ``early`` at a first one when given), or a failed one (None)."""
    s = spec(recipe, task, seed, budget)
    if accuracy is None:
        return StoredRun(s.run_id, "failed", s, {}, {}, PROVENANCE, "RuntimeError: the loss became nan by step 5", "")
    history = [{"step": 10, "target_test.acc": accuracy}]
    if early is not None:
        history.insert(0, {"step": 5, "target_test.acc": early})
    metrics: dict[str, Any] = {**history[-1], "checkpoints": history, "teacher.target_test.acc": 80.0,
                               "teacher.source_val.acc": 99.0 - seed, "target_test.images": 359, **(COMPUTE if compute else {})}
    return StoredRun(s.run_id, "done", s, metrics, {}, PROVENANCE, None, "")


def leaderboard_runs(recipes: Sequence[str] = tuple(LEADERBOARD), *, compute: bool = True, oracle_gain: float = 0.0) -> list[StoredRun]:
    """The LEADERBOARD runs; with ``oracle_gain``, each run's first checkpoint scored that much above its last."""
    return [stored(recipe, task, seed, LEADERBOARD[recipe](t, seed), compute=compute,
                   early=LEADERBOARD[recipe](t, seed) + oracle_gain if oracle_gain else None)
            for recipe in recipes for t, task in enumerate(TASKS) for seed in SEEDS]


class RunList:
    """Runs held in a list: the duck-typed store a leaderboard reads (as a merged view of several stores would be)."""

    def __init__(self, runs: list[StoredRun]) -> None:
        self._runs = runs

    def runs(self, suite: str | None = None, status: str | None = "done") -> list[StoredRun]:
        return [r for r in self._runs if (suite is None or r.spec.suite == suite) and (status is None or r.status == status)]

    def suites(self) -> list[str]:
        return sorted({r.spec.suite for r in self._runs})
