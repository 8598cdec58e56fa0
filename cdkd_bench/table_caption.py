"""A table's caption, the same in every format: its protocol, what the columns mean, and the significance tests.

Paragraphs are Markdown inline text (`code`, **bold**); the HTML and LaTeX writers convert them.
``caption_fields`` gives the same facts as data, for the JSON file.
"""

from __future__ import annotations

from typing import Any

from cdkd_bench.leaderboard import MIN_GAP, Table, _headline_words, headline_metric
from cdkd_bench.plugins import Host
from cdkd_bench.significance import MIN_WILCOXON_PAIRS, SIGNIFICANCE_LEVEL, Comparison
from cdkd_bench.table_frame import REFERENCES, FramedTable


def all_seeds(table: Table) -> list[int]:
    """Every seed any row ran (finished or failed)."""
    return sorted({seed for row in table.rows for per_task in (*row.values.values(), *row.failed.values()) for seed in per_task})


def _numbers(values: list[int]) -> str:
    return ", ".join(map(str, values)) if values else "none"


def _spread(values: list[int]) -> str:
    return f"{min(values)}" if min(values) == max(values) else f"{min(values)} to {max(values)}"


def caption_fields(framed: FramedTable, host: Host | None) -> dict[str, Any]:
    table = framed.table
    p = table.protocol
    return {
        "suite": p.suite, "teacher_arch": p.teacher_arch, "student_arch": p.student_arch, "teacher_recipe": p.teacher_recipe,
        "label_regime": p.label_regime, "budget": p.budget, "selection": p.selection, "trials": table.trials,
        "seeds": all_seeds(table), "common_seeds": table.common_seeds, "numerics": p.numerics,
        "metric": headline_metric(p.suite, host), "augmentation_parity": p.student_augmentation != "null",
        "packages": table.package_versions, "method_versions": table.method_versions,
        "significance": {reference: _significance_fields(framed.comparisons.get(reference)) for reference in REFERENCES},
    }


def _significance_fields(tested: dict[str, Comparison] | None) -> dict[str, Any]:
    if not tested:
        return {"tested": 0}
    results = [c.result for c in tested.values()]
    return {"tested": len(tested), "tests": sorted({r.test for r in results}), "pairs": sorted({r.pairs for r in results}),
            "correction": "Holm", "level": SIGNIFICANCE_LEVEL}


def caption_paragraphs(framed: FramedTable, host: Host | None) -> list[str]:
    return [protocol_sentence(framed.table), _columns_paragraph(framed.table, host), significance_sentence(framed)]


def protocol_sentence(table: Table) -> str:
    p = table.protocol
    trials = _spread(table.trials)
    versions = "; ".join(table.package_versions) or "package versions not recorded"
    methods = ", ".join(f"{c} v{'/'.join(map(str, v))}" for c, v in table.method_versions.items()) or "none recorded"
    return (f"Protocol: suite `{p.suite}`, teacher `{p.teacher_arch}` (teacher recipe `{p.teacher_recipe}`) → student "
            f"`{p.student_arch}`, label regime `{p.label_regime}`, budget `{p.budget}`, selection rule `{p.selection}`, "
            f"{trials} hyper-parameter trial{'' if trials == '1' else 's'} per recipe, seeds {_numbers(all_seeds(table))}, "
            f"computed as `{p.numerics}`. Versions: {versions}; method versions: {methods}.")


def _columns_paragraph(table: Table, host: Host | None) -> str:
    p = table.protocol
    return (
        f"Target test {_headline_words(p.suite, host)} (%), mean ± sample std over seeds (n = seeds). "
        f"avg: per seed, the mean over all tasks, over the seeds every row has on every task (here: {_numbers(table.common_seeds)}), "
        "so all rows are compared on the same seeds. "
        "gap closed: (row − source only) / (teacher − source only), on those averages, "
        f"shown when the teacher leads by at least {MIN_GAP:g} point. "
        "avg rank: on each task, the rank of each competitor (the source-only and method rows) by its mean "
        "(1 = best, ties share their mean rank, a row without a finished run on the task ranks last), averaged over the tasks. "
        "params and MACs: the student's parameters and multiply-accumulates per image at the suite's input size "
        "(the teacher's on teacher rows; — where the runs predate the count). "
        "✗ counts runs that failed; they are listed below the table and are not in the numbers."
    )


def significance_sentence(framed: FramedTable) -> str:
    parts = []
    for reference, marker in REFERENCES.items():
        tested = framed.comparisons.get(reference)
        if reference not in {row.name for row in framed.table.rows}:
            parts.append(f"{marker} not tested (no `{reference}` row)")
        elif not tested:
            parts.append(f"{marker} not tested (no other method row shares 2 (task, seed) cells with `{reference}`)")
        else:
            results = [c.result for c in tested.values()]
            tests = " or ".join(sorted({r.test for r in results}))
            parts.append(f"{marker} = better than `{reference}` ({tests}, {_spread([r.pairs for r in results])} pairs per row, "
                         f"Holm-corrected over {len(tested)} method row{'s' if len(tested) > 1 else ''})")
    return (f"Significance, two-sided and paired over the (task, seed) cells both rows have: {'; '.join(parts)}. "
            f"Better means a corrected p < {SIGNIFICANCE_LEVEL:g} (Holm 1979) and a positive mean difference; "
            f"the Wilcoxon signed-rank test is used from {MIN_WILCOXON_PAIRS} pairs on, the paired t-test below that.")
