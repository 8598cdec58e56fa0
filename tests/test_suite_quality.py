"""The embedded suite keeps its promises at the budget of the no-argument run (slow: minutes)."""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

import pytest
import torch

from cdkd_bench.engine import EngineSettings
from cdkd_bench.grid import GridRequest, expand, run_grid
from cdkd_bench.store import Store

CHANCE = 10.0


@pytest.mark.slow
def test_default_grid_shows_a_real_domain_gap_and_a_strong_teacher(host, cache_dir: Path) -> None:
    specs = expand(host, GridRequest())
    store = Store(cache_dir.parent / "results.sqlite")
    settings = EngineSettings(cache_dir=cache_dir, device="cpu")
    summary = run_grid(host, specs, store, settings, show_progress=False, log=lambda _m: None)
    assert summary.failed == 0 and summary.done == len(specs)

    runs = store.runs()
    teacher_val = defaultdict(list)
    accuracy = defaultdict(list)  # (task, recipe) -> target accuracies over seeds
    for run in runs:
        teacher_val[run.spec.source].append(run.metrics["teacher.source_val.acc"])
        accuracy[run.spec.task, run.spec.recipe].append(run.metrics["target_test.acc"])
    for source, values in teacher_val.items():
        assert min(values) >= 95.0, f"teacher on {source} reaches only {min(values):.1f}% source-val accuracy"
    # Every task of the suite's table has a real domain gap: the source-only student at least
    # 10 points below the reference trained with target labels.
    for task in {spec.task for spec in specs}:
        gap = statistics.fmean(accuracy[task, "target_oracle"]) - statistics.fmean(accuracy[task, "source_only"])
        assert gap >= 10.0, f"{task}: source_only is only {gap:.1f} points below target_oracle"
        assert min(accuracy[task, "source_only"]) >= 2.5 * CHANCE, f"{task}: source-only student near chance"

    again = run_grid(host, specs, store, settings, show_progress=False, log=lambda _m: None)
    assert (again.skipped, again.done, again.teachers_trained) == (len(specs), 0, 0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_grid_runs_on_the_gpu(host, cache_dir: Path) -> None:
    specs = expand(host, GridRequest(tasks=("printed_to_handwritten",), seeds=(0,), budget="smoke"))
    store = Store(cache_dir.parent / "results.sqlite")
    summary = run_grid(host, specs, store, EngineSettings(cache_dir=cache_dir, device="cuda"),
                       show_progress=False, log=lambda _m: None)
    assert summary.done == len(specs)
    device = store.runs()[0].provenance["device"]
    assert device == torch.cuda.get_device_name(0)


def test_the_budget_table_in_the_protocol_doc_matches_the_embedded_suite(host) -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "protocol.md").read_text(encoding="utf-8")
    for name, budget in host.suites.get("embedded").budgets.items():
        row = next(line for line in doc.splitlines() if line.startswith(f"| `{name}` |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert [int(cells[1]), int(cells[2]), int(cells[3])] == [budget.teacher_steps, budget.student_steps, budget.batch_size], row
        assert float(cells[4]) == budget.lr and float(cells[5]) == budget.weight_decay, row
