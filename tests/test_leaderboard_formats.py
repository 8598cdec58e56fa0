"""The table as a DataFrame (ranks, compute, significance) and every format rendered from it: Markdown, CSV, JSON, LaTeX."""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from pathlib import Path

import pytest
from leaderboard_runs import LEADERBOARD, SEEDS, TASKS, RunList, leaderboard_runs
from test_significance import exact_wilcoxon_p

import cdkd_bench
from cdkd_bench.errors import UserError
from cdkd_bench.leaderboard import LEADERBOARD_FORMATS, build_tables, render_markdown, write_leaderboard, write_leaderboard_files
from cdkd_bench.publish import oracle_inflation, oracle_tables, page_plots
from cdkd_bench.table_frame import frame_table


@pytest.fixture(scope="module")
def runs() -> list:
    return leaderboard_runs()


@pytest.fixture(scope="module")
def framed(runs, host):
    [table] = build_tables(runs, host)
    return frame_table(table)


def _cells(recipe: str) -> list[float]:
    return [LEADERBOARD[recipe](t, s) for t in range(len(TASKS)) for s in SEEDS]


def _differences(recipe: str, reference: str) -> list[float]:
    return [a - b for a, b in zip(_cells(recipe), _cells(reference), strict=True)]


def test_the_frame_has_one_row_per_table_row_with_its_numbers(framed) -> None:
    frame = framed.frame.set_index("row")
    assert list(framed.frame["row"]) == [row.name for row in framed.table.rows] == \
        ["teacher", "source_only", "fitnet", "kd", "nkd", "target_oracle"]
    kd = frame.loc["kd"]
    first = [LEADERBOARD["kd"](0, s) for s in SEEDS]
    assert kd["printed_to_handwritten.mean"] == pytest.approx(statistics.fmean(first))
    assert kd["printed_to_handwritten.std"] == pytest.approx(statistics.stdev(first))
    assert (kd["printed_to_handwritten.n"], kd["printed_to_handwritten.failed"], kd["avg.n"]) == (4, 0, 4)
    averages = [statistics.fmean(LEADERBOARD["kd"](t, s) for t in range(2)) for s in SEEDS]
    base = statistics.fmean(statistics.fmean(LEADERBOARD["source_only"](t, s) for t in range(2)) for s in SEEDS)
    assert kd["avg.mean"] == pytest.approx(statistics.fmean(averages))
    assert kd["gap_closed"] == pytest.approx(100 * (statistics.fmean(averages) - base) / (80.0 - base))
    assert (kd["params"], kd["macs"]) == (45_210, 1_234_567)
    assert (frame.loc["teacher", "params"], frame.loc["teacher", "macs"]) == (181_000, 5_000_000)


def test_average_ranks_order_the_competitors_on_each_task(framed) -> None:
    # Task means: printed→handwritten nkd 47.6 > kd 45.25 > source_only 41.5 > fitnet 41.15;
    # handwritten→printed nkd 57.9 > kd 55.45 > fitnet 51.65 > source_only 51.5.
    ranks = dict(zip(framed.frame["row"], framed.frame["avg_rank"], strict=True))
    assert (ranks["nkd"], ranks["kd"], ranks["source_only"], ranks["fitnet"]) == (1.0, 2.0, 3.5, 3.5)
    assert math.isnan(ranks["teacher"]) and math.isnan(ranks["target_oracle"])  # no competitors


def test_tied_rows_share_their_average_rank_and_a_failed_task_ranks_last(host) -> None:
    from leaderboard_runs import stored

    runs = leaderboard_runs(("source_only", "kd", "nkd"))
    # `at` scores exactly as kd does on the first task and failed on the second
    runs += [stored("at", TASKS[0], s, LEADERBOARD["kd"](0, s)) for s in SEEDS]
    runs += [stored("at", TASKS[1], s, None) for s in SEEDS]
    [table] = build_tables(runs, host)
    ranks = dict(zip(*(frame_table(table).frame[c] for c in ("row", "avg_rank")), strict=True))
    # first task: nkd 1, kd and at tied for 2 and 3 → 2.5 each, source_only 4; second: nkd 1, kd 2, source_only 3, at last (4)
    assert (ranks["nkd"], ranks["kd"], ranks["at"], ranks["source_only"]) == (1.0, 2.25, 3.25, 3.5)


def test_markers_follow_the_holm_corrected_tests_worked_out_independently(framed) -> None:
    frame = framed.frame.set_index("row")
    p_all_better = 2 / 256  # all 8 differences one way: the two most extreme of 2^8 sign patterns
    for recipe in ("kd", "nkd"):
        assert exact_wilcoxon_p(_differences(recipe, "source_only")) == pytest.approx(p_all_better)
    p_fitnet = exact_wilcoxon_p(_differences("fitnet", "source_only"))
    assert p_fitnet > 0.05
    # vs source_only, three method rows: Holm multiplies the smallest p by 3, the next by 2 (kept monotone)
    assert frame.loc["kd", "p_holm_vs_source_only"] == pytest.approx(3 * p_all_better)
    assert frame.loc["nkd", "p_holm_vs_source_only"] == pytest.approx(3 * p_all_better)
    assert frame.loc["fitnet", "p_holm_vs_source_only"] == pytest.approx(max(3 * p_all_better, p_fitnet))
    assert frame.loc["fitnet", "p_vs_source_only"] == pytest.approx(p_fitnet)
    # vs kd, two: nkd better on every cell, fitnet worse on every cell (a small p, but the wrong way)
    assert exact_wilcoxon_p(_differences("fitnet", "kd")) == pytest.approx(p_all_better)
    assert frame.loc["nkd", "p_holm_vs_kd"] == pytest.approx(2 * p_all_better)
    assert frame.loc["fitnet", "p_holm_vs_kd"] == pytest.approx(2 * p_all_better)
    assert frame.loc["nkd", "pairs_vs_kd"] == 8 and frame.loc["kd", "pairs_vs_source_only"] == 8
    assert dict(frame["markers"]) == {"teacher": "", "source_only": "", "fitnet": "", "kd": "†", "nkd": "†‡", "target_oracle": ""}
    assert bool(frame.loc["fitnet", "better_than_kd"]) is False


def test_the_markdown_table_gains_rank_compute_and_markers_and_keeps_the_page(runs, host) -> None:
    text = render_markdown(build_tables(runs, host), "suite `embedded`", host)
    rows = {line.split(" |")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert rows["method"] == "| method | printed→handwritten | handwritten→printed | avg | gap closed | avg rank | params | MACs |"
    assert rows["nkd †‡"].endswith("| 1.00 | 45.2k | 1.23M |") and rows["kd †"].endswith("| 2.00 | 45.2k | 1.23M |")
    assert rows["fitnet"].endswith("| 3.50 | 45.2k | 1.23M |")
    assert "Protocol: suite `embedded`, teacher `resnet18_w16_32px` (teacher recipe `source`) → student `resnet10_w8_32px`, " \
           "label regime `uda`, budget `smoke`, selection rule `last`, 1 hyper-parameter trial per recipe, seeds 0, 1, 2, 3" in text
    assert "Versions: cdkd-bench 0.1.0, torch 2.14.1, timm 1.0.31; method versions: fitnet v1, kd v1, nkd v1, source_only v1, " \
           "target_oracle v1." in text
    assert "† = better than `source_only` (Wilcoxon signed-rank, 8 pairs per row, Holm-corrected over 3 method rows)" in text
    assert "‡ = better than `kd` (Wilcoxon signed-rank, 8 pairs per row, Holm-corrected over 2 method rows)" in text
    # everything above and under the table stays
    for kept in ("## Teacher `resnet18_w16_32px` → student", "Augmentation parity: ", "Source-domain validation accuracy",
                 "Minimal detectable difference", "Produced with: cdkd-bench 0.1.0", "Produced by: `cdkd-bench run"):
        assert kept in text


def test_runs_without_compute_counts_show_a_dash(host) -> None:
    [table] = build_tables(leaderboard_runs(("source_only", "kd"), compute=False), host)
    rows = {line.split(" |")[0].lstrip("| "): line for line in render_markdown([table], "t", host).splitlines()}
    assert rows["kd †"].endswith("| 1.00 | — | — |")
    plots = page_plots(leaderboard_runs(("source_only", "kd"), compute=False), [frame_table(table)], host)[0]
    assert plots[0].svg is None and "nothing to place on a compute axis" in plots[0].caption


def test_csv_has_a_row_per_table_row_with_protocol_and_numeric_columns(framed, host) -> None:
    from cdkd_bench.table_formats import csv_text

    rows = list(csv.DictReader(io.StringIO(csv_text([framed]))))
    assert [r["row"] for r in rows] == list(framed.frame["row"])
    nkd = next(r for r in rows if r["row"] == "nkd")
    assert (nkd["suite"], nkd["teacher_arch"], nkd["student_arch"], nkd["selection"], nkd["budget"], nkd["table"]) == \
        ("embedded", "resnet18_w16_32px", "resnet10_w8_32px", "last", "smoke", "1")
    assert (nkd["trials"], nkd["seeds"], nkd["packages"]) == ("1", "0 1 2 3", "cdkd-bench 0.1.0, torch 2.14.1, timm 1.0.31")
    assert nkd["method_versions"] == "fitnet v1; kd v1; nkd v1; source_only v1; target_oracle v1"
    assert float(nkd["avg.mean"]) == pytest.approx(framed.frame.set_index("row").loc["nkd", "avg.mean"])
    assert (float(nkd["avg_rank"]), int(nkd["macs"]), nkd["markers"], nkd["better_than_kd"]) == (1.0, 1_234_567, "†‡", "True")
    teacher = rows[0]
    assert teacher["avg_rank"] == "" and teacher["gap_closed"] == ""  # absent numbers are empty, never a made-up 0


def test_json_carries_numbers_caption_and_provenance(framed, host) -> None:
    from cdkd_bench.table_formats import json_text

    document = json.loads(json_text([framed], "embedded", "suite `embedded`", host, None))
    assert document["cdkd_bench"] == cdkd_bench.__version__ and document["suite"] == "embedded"
    [table] = document["tables"]
    assert table["protocol"]["student_arch"] == "resnet10_w8_32px" and table["protocol"]["budget_numbers"]["protocol"] >= 1
    caption = table["caption"]
    assert (caption["suite"], caption["selection"], caption["trials"], caption["seeds"]) == ("embedded", "last", [1], [0, 1, 2, 3])
    assert caption["method_versions"]["kd"] == [1] and caption["packages"] == ["cdkd-bench 0.1.0, torch 2.14.1, timm 1.0.31"]
    assert caption["significance"]["source_only"] == {"tested": 3, "tests": ["Wilcoxon signed-rank"], "pairs": [8],
                                                      "correction": "Holm", "level": 0.05}
    nkd = next(row for row in table["rows"] if row["name"] == "nkd")
    assert nkd["tasks"]["embedded.printed_to_handwritten"]["values"]["3"] == pytest.approx(LEADERBOARD["nkd"](0, 3))
    assert nkd["significance"]["kd"]["better"] is True and nkd["significance"]["kd"]["pairs"] == 8
    assert nkd["avg_rank"] == 1.0 and nkd["macs"] == 1_234_567 and nkd["markers"] == "†‡"
    teacher = table["rows"][0]
    assert teacher["gap_closed"] is None and teacher["significance"] == {}
    assert table["commands"] == ["cdkd-bench run --budget smoke --seeds 0,1,2,3"]
    assert table["produced_with"] == ["cdkd-bench 0.1.0, torch 2.14.1, timm 1.0.31, on cpu (x86_64, 1 thread)"]
    assert table["data_hashes"] == {"embedded.handwritten": "handwritten-hash", "embedded.printed": "printed-hash"}


def test_latex_is_a_booktabs_table_with_everything_escaped(framed, host) -> None:
    from cdkd_bench.table_formats import latex_text

    tex = latex_text([framed], "suite `embedded`", host)
    for rule in (r"\toprule", r"\midrule", r"\bottomrule", r"\caption{Protocol: suite \texttt{embedded}", r"\label{tab:embedded-1}"):
        assert tex.count(rule) == 1, rule
    assert r"nkd \dag{}\ddag{} & " in tex and r"source\_only (student on source only) & " in tex
    assert r"$\pm$" in tex and "±" not in tex and "†" not in tex
    body = tex[tex.index(r"\begin{tabular}"):]
    assert "_" not in body.replace(r"\_", "")  # every underscore of the table escaped
    assert r"corrected p $<$ 0.05" in tex


def test_every_format_is_written_and_rendering_again_gives_the_same_bytes(runs, host, tmp_path: Path) -> None:
    store = RunList(runs)  # any object with runs() and suites() will do: a merged view of several stores, say
    paths, text = write_leaderboard_files(store, "embedded", tmp_path / "a", host, None, LEADERBOARD_FORMATS)
    assert [p.name for p in paths] == [f"embedded.{name}" for name in LEADERBOARD_FORMATS]
    assert paths[0].read_text() == text
    again, _ = write_leaderboard_files(store, "embedded", tmp_path / "b", host, None, LEADERBOARD_FORMATS)
    for first, second in zip(paths, again, strict=True):
        assert first.read_bytes() == second.read_bytes(), first.name
    path, md = write_leaderboard(store, "embedded", tmp_path / "c", host, formats=("csv",))
    assert path.name == "embedded.csv" and not (tmp_path / "c" / "embedded.md").exists() and md == text


def test_an_unknown_format_is_one_sentence(runs, host, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="unknown leaderboard format 'pdf'"):
        write_leaderboard(RunList(runs), "embedded", tmp_path, host, formats=("md", "pdf"))
    assert not list(tmp_path.iterdir())


def test_the_oracle_plot_shows_what_choosing_on_test_labels_adds(host) -> None:
    if "oracle" not in host.selectors:
        pytest.skip("no `oracle` selection rule installed (plugins/selection/oracle.py)")
    runs = leaderboard_runs(oracle_gain=2.5)  # every run's first checkpoint scored 2.5 points above its last
    [table] = build_tables(runs, host)
    by_protocol, why_not = oracle_tables(runs, host)
    inflation, note = oracle_inflation(table, by_protocol, why_not, host)
    assert inflation == pytest.approx({"source_only": 2.5, "fitnet": 2.5, "kd": 2.5, "nkd": 2.5})
    assert "`oracle`" in note and "minus its avg under `last`" in note
    [oracle_table] = build_tables(runs, host, "oracle")
    assert oracle_inflation(oracle_table, by_protocol, why_not, host)[1].startswith("Not drawn: this table's own rule is `oracle`")


def test_without_an_oracle_rule_the_plot_is_left_out_with_a_reason(runs) -> None:
    tables = build_tables(runs, None)  # no plugins at all: no `oracle` rule
    plots = page_plots(runs, [frame_table(t) for t in tables], None)[0]
    assert plots[2].svg is None and "no selection rule named `oracle` is installed" in plots[2].caption
