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
            "student.params": 45_210, "student.macs": 1_234_567, "teacher.params": 181_000, "teacher.macs": 5_000_000,
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
    assert lines["method"] == "| method | printed→handwritten | handwritten→printed | avg | gap closed | avg rank | params | MACs |"
    # † : kd beats source_only by 20 and 18 points on each task's two seeds (a paired t-test over 4 pairs)
    kd = lines["kd †"]
    # per task: 61 ± 1.4 on the first, 71 ± 1.4 on the second; avg per seed (60+70)/2=65, (62+72)/2=67
    assert "| 61.0 ± 1.4 (n=2) | 71.0 ± 1.4 (n=2) | 66.0 ± 1.4 (n=2) |" in kd
    # gap closed = (66 - 47) / (80 - 47); kd ranks first on both tasks; the student's params and MACs per image
    assert kd.endswith(f"| 66.0 ± 1.4 (n=2) | {100 * (66 - 47) / (80 - 47):.0f}% | 1.00 | 45.2k | 1.23M |")
    assert lines["source_only (student on source only)"].endswith("| — | 2.00 | 45.2k | 1.23M |")
    # the teacher row shows the teacher's network, and no rank: it does not compete
    assert lines["teacher `resnet18_w16_32px` (trained on source)"].endswith("| — | — | 181k | 5M |")
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


def _record(store: Store, spec, accuracy: float | None, teacher: float = 80.0) -> None:
    if accuracy is None:
        store.record(spec, {"status": "failed", "error": "RuntimeError: the loss became nan by step 5"})
        return
    store.record(spec, {"status": "done", "metrics": {"target_test.acc": accuracy, "teacher.target_test.acc": teacher,
                                                      "teacher.source_val.acc": 99.0}})


def _lines(text: str) -> dict[str, str]:
    return {line.split(" |")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| ")}


def test_failed_runs_are_counted_in_their_cells_and_listed(host, tmp_path: Path) -> None:
    store = Store(tmp_path / "r.sqlite")
    for spec in expand(host, GridRequest(tasks=TASKS, seeds=(0, 1), budget="smoke")):
        fails = (spec.recipe == "kd" and spec.seed == 1 and spec.task.endswith(TASKS[0])) or spec.recipe == "target_oracle"
        _record(store, spec, None if fails else 50.0)
    text = render_markdown(build_tables(store.runs(status=None), host), "t")
    rows = _lines(text)
    assert "| 50.0 (n=1, 1 failed ✗) | 50.0 ± 0.0 (n=2) |" in rows["kd"]
    assert rows["target_oracle (upper bound: trained with target labels)"].count("— (n=0, 2 failed ✗)") == 2
    assert "Failed runs (5;" in text and "the loss became nan by step 5" in text


def test_avg_and_gap_closed_compare_every_row_on_the_same_seeds(host, tmp_path: Path) -> None:
    store = Store(tmp_path / "r.sqlite")
    # source_only has seeds 0-2; kd finished only seed 0 (an interrupted grid): every row is averaged over seed 0
    source_only = {0: 40.0, 1: 60.0, 2: 62.0}
    for spec in expand(host, GridRequest(tasks=TASKS, seeds=(0, 1, 2), budget="smoke")):
        if spec.recipe == "kd" and spec.seed > 0:
            continue
        accuracy = {"source_only": source_only[spec.seed], "kd": 70.0, "target_oracle": 95.0}[spec.recipe]
        _record(store, spec, accuracy)
    [table] = build_tables(store.runs(status=None), host)
    assert table.common_seeds == [0]
    rows = _lines(render_markdown([table], "t"))
    assert "| 40.0 (n=1) |" in rows["source_only (student on source only)"]  # avg over seed 0 only, not 54.0
    # gap closed on matched seeds: (70 - 40) / (80 - 40) = 75%, where mixing seeds would give (70 - 54) / (80 - 54) = 62%
    assert rows["kd"].endswith("| 70.0 (n=1) | 75% | 1.00 | — | — |")


def test_runs_with_other_numerics_never_share_a_table(host, tmp_path: Path) -> None:
    store = Store(tmp_path / "r.sqlite")
    for threads in (1, 2):
        for spec in expand(host, GridRequest(tasks=TASKS, seeds=(0,), budget="smoke", threads=threads, device="cpu")):
            _record(store, spec, 50.0 + threads)
    tables = build_tables(store.runs(), host)
    assert sorted(t.protocol.numerics for t in tables) == ["cpu fp32 1 thread", "cpu fp32 2 threads"]


def test_two_configurations_of_one_recipe_are_two_rows_never_one_merged_cell(host, tmp_path: Path) -> None:
    store = Store(tmp_path / "r.sqlite")
    for temperature, accuracy in ((4.0, 60.0), (2.0, 70.0)):
        request = GridRequest(tasks=TASKS, recipes=("kd",), seeds=(0,), budget="smoke", hparams={"kd.temperature": temperature})
        for spec in expand(host, request):
            if spec.recipe == "kd":
                _record(store, spec, accuracy)
    rows = {row.name: row for row in build_tables(store.runs(), host)[0].rows}
    assert {"kd [kd.temperature=4.0]", "kd [kd.temperature=2.0]"} <= set(rows)
    assert rows["kd [kd.temperature=2.0]"].values[f"embedded.{TASKS[0]}"] == {0: 70.0}
    assert rows["kd [kd.temperature=4.0]"].values[f"embedded.{TASKS[0]}"] == {0: 60.0}


def test_budgets_that_share_a_name_but_not_their_numbers_never_share_a_table(host, tmp_path: Path) -> None:
    import dataclasses

    from cdkd_bench.store import StoredRun

    spec = next(s for s in expand(host, GridRequest(tasks=TASKS[:1], recipes=("kd",), seeds=(0,), budget="smoke")) if s.recipe == "kd")
    longer = dataclasses.replace(spec, steps=spec.steps * 2)
    metrics = {"target_test.acc": 50.0, "teacher.target_test.acc": 80.0, "teacher.source_val.acc": 99.0}
    runs = [StoredRun(s.run_id, "done", s, metrics, {}, {}, None, "") for s in (spec, longer)]
    assert len(build_tables(runs, host)) == 2


def test_the_minimal_detectable_difference_is_printed_from_the_paired_seed_differences(host, tmp_path: Path) -> None:
    import math

    from cdkd_bench.power import minimal_detectable_difference

    store = Store(tmp_path / "r.sqlite")
    kd_gain = {0: 5.0, 1: 2.0, 2: 3.5}  # kd - source_only per seed, on both tasks
    for spec in expand(host, GridRequest(tasks=TASKS, seeds=(0, 1, 2), budget="smoke")):
        base = 40.0 + 3 * spec.seed
        _record(store, spec, {"source_only": base, "kd": base + kd_gain[spec.seed], "target_oracle": 95.0}[spec.recipe])
    text = render_markdown(build_tables(store.runs(), host), "t")
    # Independently: the per-seed differences 5, 2, 3.5 have sample sd 1.5 on each task and on avg.
    sd = math.sqrt(((5 - 3.5) ** 2 + (2 - 3.5) ** 2 + 0) / 2)
    expected = f"{minimal_detectable_difference(sd, 3):.1f}"
    line = next(line for line in text.splitlines() if line.startswith("Minimal detectable difference"))
    assert f"**avg {expected} points**" in line and f"printed→handwritten {expected}" in line
    assert "paired over the 3 seeds" in line and "cannot separate methods 3 points apart" in line


def test_one_seed_says_the_table_cannot_tell_methods_apart(host, tmp_path: Path) -> None:
    store = Store(tmp_path / "r.sqlite")
    for spec in expand(host, GridRequest(tasks=TASKS, seeds=(0,), budget="smoke")):
        _record(store, spec, 50.0)
    assert "Minimal detectable difference: not estimable" in render_markdown(build_tables(store.runs(), host), "t")


def test_parity_off_is_its_own_table_and_says_so(host, tmp_path: Path) -> None:
    store = Store(tmp_path / "r.sqlite")
    for parity in (True, False):
        for spec in expand(host, GridRequest(tasks=TASKS, seeds=(0,), budget="smoke", augmentation_parity=parity)):
            _record(store, spec, 50.0)
    text = render_markdown(build_tables(store.runs(), host), "t")
    assert text.count("Augmentation parity: on") == 1 and text.count("Augmentation parity: off (ablation") == 1


def test_runs_on_differently_generated_images_are_never_merged(host, tmp_path: Path) -> None:
    import dataclasses

    store = Store(tmp_path / "r.sqlite")
    for spec in expand(host, GridRequest(tasks=TASKS[:1], seeds=(0,), budget="smoke")):
        _record(store, spec, 50.0)
        _record(store, dataclasses.replace(spec, target_data="ffffffffffffffff"), 60.0)  # another machine's fonts
    tables = build_tables(store.runs(), host)
    assert len(tables) == 2
    assert any("embedded.handwritten ffffffffffffffff" in t.protocol.data for t in tables)
    assert "Other machines generated some domains differently" in render_markdown(tables, "t")


def test_the_footer_names_each_domains_content_hash_and_packages(host, tmp_path: Path) -> None:
    store = Store(tmp_path / "r.sqlite")
    for spec in expand(host, GridRequest(tasks=TASKS[:1], seeds=(0,), budget="smoke")):
        data = {spec.source: {"hash": spec.teacher.source_data, "packages": {"matplotlib": "3.9.0"}},
                spec.target: {"hash": spec.target_data, "packages": {"scikit-learn": "1.5.0"}}}
        images = 359 if spec.evaluation == "test split" else 1797  # the oracle is scored on the held-out split
        store.record(spec, {"status": "done", "metrics": {"target_test.acc": 50.0, "teacher.target_test.acc": 80.0,
                                                         "teacher.source_val.acc": 99.0, "target_test.images": images},
                            "provenance": {"data": data}})
    text = render_markdown(build_tables(store.runs(), host), "t", host)
    spec = store.runs()[0].spec
    assert f"`embedded.printed` {spec.teacher.source_data} (matplotlib 3.9.0)" in text
    assert f"`embedded.handwritten` {spec.target_data} (scikit-learn 1.5.0)" in text
    assert "printed→handwritten 359 (test split); 1797 (transductive)" in text
    assert "**Demonstration:** budget `smoke`" in text
