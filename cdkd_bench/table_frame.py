"""A leaderboard ``Table`` as a pandas DataFrame: the numbers every publishing format is rendered from.

One frame row per table row, in the table's order. Columns (``<task>`` is the task name without
its suite prefix):

- ``row``, ``kind``, ``label``: the row's name, its kind (see ``leaderboard.ROW_NOTES``) and its label in a table;
- ``<task>.mean``, ``<task>.std``, ``<task>.n``, ``<task>.failed``: the cell (all of the row's seeds on that task);
- ``avg.mean``, ``avg.std``, ``avg.n``: per seed the mean over tasks, over the table's common seeds;
- ``gap_closed``: (row − source only) / (teacher − source only) in %, for method rows where the teacher leads by MIN_GAP;
- ``avg_rank``: the mean over tasks of the row's rank among the competitors (baseline and method rows);
- ``params``, ``macs``: the row's network (the student's; the teacher's on teacher rows);
- per reference row R (``source_only``, ``kd``): ``pairs_vs_R``, ``p_vs_R``, ``p_holm_vs_R``, ``better_than_R``;
- ``markers``: the significance markers of the row (``†`` better than source_only, ``‡`` better than kd).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from cdkd_bench.leaderboard import MIN_GAP, ROW_NOTES, Row, Table, _mean_average, mean_std
from cdkd_bench.significance import Comparison, compare
from cdkd_bench.spec import SOURCE_TEACHER

# Reference rows a method is tested against, and the marker it earns by beating each.
REFERENCES = {"source_only": "†", "kd": "‡"}
COMPETITORS = ("baseline", "method")
TASK_STATS = ("mean", "std", "n", "failed")


@dataclass(frozen=True)
class FramedTable:
    table: Table
    frame: pd.DataFrame
    columns: dict[str, str]
    """Each task → the stem of its columns in ``frame``."""
    comparisons: dict[str, dict[str, Comparison]]
    """Reference row → method row → its test against the reference (only rows that could be tested)."""


def task_stem(task: str, suite: str) -> str:
    return task[len(suite) + 1:] if task.startswith(f"{suite}.") else task


def row_label(row: Row, table: Table) -> str:
    """How a row is named in a table: its name and what it is."""
    p = table.protocol
    note = ROW_NOTES[row.kind]
    if row.kind == "teacher":
        adapted = f"adapted to the target by `{p.teacher_recipe}` with unlabelled target images"
        return f"teacher `{p.teacher_arch}` ({adapted if p.teacher_recipe != SOURCE_TEACHER else note})"
    if row.kind == "source_teacher":
        return f"teacher `{p.teacher_arch}` ({note})"
    return f"{row.name} ({note})" if note else row.name


def complete_average(row: Row, table: Table) -> list[float]:
    """The row's per-seed task averages over the table's common seeds; empty when it lacks one of them."""
    seeds = table.common_seeds
    return row.average(table.tasks, seeds) if set(seeds) <= set(row.seeds_complete(table.tasks)) else []


def frame_table(table: Table) -> FramedTable:
    suite = table.protocol.suite
    columns = {task: task_stem(task, suite) for task in table.tasks}
    seeds = table.common_seeds
    base, top = _mean_average(table, "baseline", seeds), _mean_average(table, "teacher", seeds)
    records = []
    for row in table.rows:
        record: dict[str, object] = {"row": row.name, "kind": row.kind, "label": row_label(row, table)}
        for task, stem in columns.items():
            values = list(row.values.get(task, {}).values())
            mean, std = mean_std(values) if values else (math.nan, None)
            record |= {f"{stem}.mean": mean, f"{stem}.std": math.nan if std is None else std, f"{stem}.n": len(values),
                       f"{stem}.failed": len(row.failed.get(task, ()))}
        avg = complete_average(row, table)
        mean, std = mean_std(avg) if avg else (math.nan, None)
        record |= {"avg.mean": mean, "avg.std": math.nan if std is None else std, "avg.n": len(avg)}
        gap = math.nan
        if row.kind == "method" and avg and base is not None and top is not None and top - base >= MIN_GAP:
            gap = 100 * (mean - base) / (top - base)
        record |= {"gap_closed": gap, "params": row.params, "macs": row.macs}
        records.append(record)
    frame = pd.DataFrame.from_records(records)
    for name in ("params", "macs"):
        frame[name] = frame[name].astype("Int64")  # counts; pd.NA where the runs predate them
    frame["avg_rank"] = _average_ranks(frame, list(columns.values()))
    comparisons = _comparisons(table)
    for reference in REFERENCES:
        tested = comparisons.get(reference, {})
        frame[f"pairs_vs_{reference}"] = pd.array([tested[r].result.pairs if r in tested else None for r in frame["row"]], dtype="Int64")
        frame[f"p_vs_{reference}"] = [tested[r].result.p if r in tested else math.nan for r in frame["row"]]
        frame[f"p_holm_vs_{reference}"] = [tested[r].p_holm if r in tested else math.nan for r in frame["row"]]
        frame[f"better_than_{reference}"] = pd.array([tested[r].better if r in tested else None for r in frame["row"]], dtype="boolean")
    frame["markers"] = ["".join(marker for reference, marker in REFERENCES.items()
                                if row in comparisons.get(reference, {}) and comparisons[reference][row].better)
                        for row in frame["row"]]
    return FramedTable(table, frame, columns, comparisons)


def _average_ranks(frame: pd.DataFrame, stems: list[str]) -> pd.Series:
    """Per task, each competitor's rank by cell mean (1 = best, ties share the average rank); then the mean over tasks.

    A competitor without a finished run on a task ranks last there: a recipe that fails is not better
    than one that finishes. Teacher and upper-bound rows are no competitors and get no rank.
    """
    competing = frame["kind"].isin(COMPETITORS)
    means = frame.loc[competing, [f"{stem}.mean" for stem in stems]]
    ranks = means.rank(axis=0, ascending=False, method="average", na_option="bottom")
    return ranks.mean(axis=1).reindex(frame.index)


def _comparisons(table: Table) -> dict[str, dict[str, Comparison]]:
    """Every method row tested against each reference row present, over the (task, seed) cells both have."""
    found: dict[str, dict[str, Comparison]] = {}
    for reference in REFERENCES:
        ref = next((row for row in table.rows if row.name == reference), None)
        if ref is None:
            continue
        pairs = {}
        for row in table.rows:
            if row.kind != "method" or row is ref:
                continue
            cells = [(task, seed) for task in table.tasks
                     for seed in sorted(set(row.values.get(task, {})) & set(ref.values.get(task, {})))]
            pairs[row.name] = ([row.values[t][s] for t, s in cells], [ref.values[t][s] for t, s in cells])
        found[reference] = compare(reference, pairs)
    return found
