from __future__ import annotations

import statistics
from pathlib import Path

from cdkd_bench.grid import GridRequest, expand
from cdkd_bench.leaderboard import build_tables, format_cell, render_markdown, write_leaderboard
from cdkd_bench.store import Store

TASKS = ("printed_to_handwritten", "handwritten_to_printed")
# (recipe, task, seed) -> accuracy; the teacher scores 80 on every task
ACCURACY = {
    ("source_only", 0): 40.0, ("source_only", 1): 44.0,
    ("kd", 0): 60.0, ("kd", 1): 62.0,
    ("target_oracle", 0): 95.0, ("target_oracle", 1): 97.0,
}


def fill_store(host, path: Path) -> Store:
    store = Store(path)
    for spec in expand(host, GridRequest(tasks=TASKS, seeds=(0, 1), budget="smoke")):
        bonus = 10.0 if spec.task.endswith(TASKS[1]) else 0.0
        metrics = {
            "target_test.acc": ACCURACY[(spec.recipe, spec.seed)] + bonus,
            "teacher.target_test.acc": 80.0,
            "teacher.source_val.acc": 99.0 - spec.seed,
        }
        provenance = {"cdkd_bench": "0.1.0", "torch": "2.14.1", "timm": "1.0.31", "device": "cpu (x86_64, 2 threads)"}
        store.record(spec, {"status": "done", "metrics": metrics, "timings": {}, "provenance": provenance})
    return store


def test_cells_show_mean_sample_std_and_n() -> None:
    assert format_cell([40.0, 44.0]) == f"42.0 ± {statistics.stdev([40.0, 44.0]):.1f} (n=2)"
    assert format_cell([50.0]) == "50.0 (n=1)"
    assert format_cell([]) == "—"


def test_table_rows_columns_and_gap_closed(host, tmp_path: Path) -> None:
    store = fill_store(host, tmp_path / "r.sqlite")
    tables = build_tables(store.runs(), host)
    assert len(tables) == 1
    table = tables[0]
    assert [row.name for row in table.rows] == ["teacher", "source_only", "kd", "target_oracle"]
    assert table.tasks == [f"embedded.{t}" for t in TASKS]
    text = render_markdown(tables, "suite `embedded`")
    lines = {line.split(" |")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| ")}
    kd = lines["kd"]
    # per task: 61 ± 1.4 on the first, 71 ± 1.4 on the second; avg per seed (60+70)/2=65, (62+72)/2=67
    assert "| 61.0 ± 1.4 (n=2) | 71.0 ± 1.4 (n=2) | 66.0 ± 1.4 (n=2) |" in kd
    # gap closed = (66 - 47) / (80 - 47)
    assert kd.endswith(f"| {100 * (66 - 47) / (80 - 47):.0f}% |")
    assert "target_oracle (upper bound: trained with target labels)" in text
    assert "`target_oracle` reads target labels" in text
    assert "| embedded.printed | 98.5 ± 0.7 (n=2) |" in text
    assert "Produced with: cdkd-bench 0.1.0, torch 2.14.1, timm 1.0.31, on cpu (x86_64, 2 threads)." in text


def test_average_counts_only_seeds_that_have_every_task(host, tmp_path: Path) -> None:
    store = Store(tmp_path / "r.sqlite")
    for spec in expand(host, GridRequest(tasks=TASKS, seeds=(0, 1), budget="smoke")):
        if spec.seed == 1 and spec.task.endswith(TASKS[1]):
            continue  # seed 1 is missing one task
        store.record(spec, {"status": "done", "metrics": {"target_test.acc": 50.0, "teacher.target_test.acc": 80.0,
                                                         "teacher.source_val.acc": 99.0}})
    kd = next(r for r in build_tables(store.runs(), host)[0].rows if r.name == "kd")
    assert kd.average(build_tables(store.runs(), host)[0].tasks) == [50.0]


def test_write_leaderboard_writes_the_suite_page(host, tmp_path: Path) -> None:
    store = fill_store(host, tmp_path / "r.sqlite")
    path, text = write_leaderboard(store, "embedded", tmp_path / "boards", host)
    assert path == tmp_path / "boards" / "embedded.md"
    assert path.read_text() == text and text.startswith("# Leaderboard: suite `embedded`")


def test_an_empty_store_says_so(host, tmp_path: Path) -> None:
    _, text = write_leaderboard(Store(tmp_path / "r.sqlite"), "embedded", tmp_path, host)
    assert "No runs in the store yet" in text
