"""Markdown, CSV, JSON and LaTeX renderings of framed leaderboard tables (the HTML page is ``html_page``).

Every format reads the same ``FramedTable``s, so their numbers cannot disagree. Nothing here
depends on when or where it runs: the same store renders to the same bytes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Sequence
from typing import Any

import pandas as pd

import cdkd_bench
from cdkd_bench.leaderboard import EMPTY_STORE, _short_task, format_stats, table_footer, table_heading
from cdkd_bench.plugins import Host
from cdkd_bench.table_caption import all_seeds, caption_fields, caption_paragraphs
from cdkd_bench.table_frame import REFERENCES, FramedTable, complete_average

FIXED_COLUMNS = ("avg", "gap closed", "avg rank", "params", "MACs")
PROTOCOL_COLUMNS = ("suite", "teacher_arch", "student_arch", "teacher_recipe", "label_regime", "selection", "budget", "numerics")
EXTRA_COLUMNS = ("augmentation_parity", "data", "trials", "seeds", "packages", "method_versions")
JSON_FORMAT_VERSION = 1


def number(value: Any) -> Any:
    """A frame value as plain Python: None for NaN and pd.NA, int and float otherwise (numpy scalars unwrapped)."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def si(count: Any) -> str:
    """A count with three significant digits and a k/M/G/T suffix (11689512 → 11.7M); — when unknown."""
    value = number(count)
    if value is None:
        return "—"
    for divisor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= divisor:
            return f"{value / divisor:.3g}{suffix}"
    return str(value)


def header(framed: FramedTable) -> list[str]:
    return ["method", *(_short_task(task, framed.table.protocol.suite) for task in framed.table.tasks), *FIXED_COLUMNS]


def text_rows(framed: FramedTable) -> list[list[str]]:
    """Each row's cells as Markdown inline text (the other formats convert it)."""
    rows = []
    for record in framed.frame.to_dict("records"):
        def cell(stem: str, failed: int = 0, record: dict[str, Any] = record) -> str:
            return format_stats(number(record[f"{stem}.mean"]), number(record[f"{stem}.std"]), int(record[f"{stem}.n"]), failed)

        name = f"{record['label']} {record['markers']}" if record["markers"] else record["label"]
        gap, rank = number(record["gap_closed"]), number(record["avg_rank"])
        rows.append([name, *(cell(stem, int(record[f"{stem}.failed"])) for stem in framed.columns.values()), cell("avg"),
                     "—" if gap is None else f"{gap:.0f}%", "—" if rank is None else f"{rank:.2f}",
                     si(record["params"]), si(record["macs"])])
    return rows


# --------------------------------------------------------------------------- Markdown


def markdown_table(framed: FramedTable) -> list[str]:
    head = header(framed)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    return lines + ["| " + " | ".join(cells) + " |" for cells in text_rows(framed)]


def markdown_section(framed: FramedTable, host: Host | None) -> list[str]:
    table = framed.table
    lines = table_heading(table, host)
    for paragraph in caption_paragraphs(framed, host):
        lines += [paragraph, ""]
    lines += [f"- {flag}" for flag in table.flags]
    if table.flags:
        lines.append("")
    return [*lines, *markdown_table(framed), "", *table_footer(table, host)]


def markdown_page(framed_tables: Sequence[FramedTable], title: str, host: Host | None) -> str:
    lines = [f"# Leaderboard: {title}", ""]
    if not framed_tables:
        return "\n".join([*lines, EMPTY_STORE, ""])
    for framed in framed_tables:
        lines += markdown_section(framed, host)
    return "\n".join(lines)


# --------------------------------------------------------------------------- CSV


def protocol_columns(framed: FramedTable, index: int) -> dict[str, Any]:
    """The caption's facts as columns, so that a CSV line stands on its own."""
    table = framed.table
    p = table.protocol
    return {"table": index, **{name: getattr(p, name) for name in PROTOCOL_COLUMNS},
            "augmentation_parity": p.student_augmentation != "null", "data": p.data,
            "trials": "/".join(map(str, table.trials)), "seeds": " ".join(map(str, all_seeds(table))),
            "packages": "; ".join(table.package_versions),
            "method_versions": "; ".join(f"{c} v{'/'.join(map(str, v))}" for c, v in table.method_versions.items())}


def csv_text(framed_tables: Sequence[FramedTable]) -> str:
    """One CSV row per table row: the protocol columns, then the frame's numbers (task columns of every table)."""
    parts = []
    for index, framed in enumerate(framed_tables, start=1):
        part = framed.frame.drop(columns=["label"])
        for position, (name, value) in enumerate(protocol_columns(framed, index).items()):
            part.insert(position, name, value)
        parts.append(part)
    if not parts:  # an empty store: the header alone
        return ",".join(["table", *PROTOCOL_COLUMNS, *EXTRA_COLUMNS, "row", "kind"]) + "\n"
    return str(pd.concat(parts, ignore_index=True, sort=False).to_csv(index=False, lineterminator="\n"))


# --------------------------------------------------------------------------- JSON


def json_text(framed_tables: Sequence[FramedTable], suite: str, title: str, host: Host | None, selection: str | None) -> str:
    document = {
        "format": "cdkd-bench leaderboard", "format_version": JSON_FORMAT_VERSION, "cdkd_bench": cdkd_bench.__version__,
        "suite": suite, "title": title, "selection": selection,
        "tables": [_json_table(framed, host) for framed in framed_tables],
    }
    return json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def _json_table(framed: FramedTable, host: Host | None) -> dict[str, Any]:
    table = framed.table
    protocol = dataclasses.asdict(table.protocol)
    # Two protocol fields hold canonical JSON; they are decoded so that a reader gets the numbers, not a string.
    for name in ("budget_numbers", "student_augmentation"):
        protocol[name] = json.loads(protocol[name])
    return {
        "protocol": protocol,
        "caption": caption_fields(framed, host),
        "caption_text": caption_paragraphs(framed, host),
        "flags": table.flags,
        "tasks": [{"name": task, "column": stem, "test_images": table.test_images.get(task)} for task, stem in framed.columns.items()],
        "rows": [_json_row(framed, index) for index in range(len(table.rows))],
        "teacher_source_val": {source: {str(seed): v for seed, v in sorted(per_seed.items())}
                               for source, per_seed in sorted(table.teacher_source_val.items())},
        "failed_runs": [{"run_id": run.run_id, "recipe": run.spec.recipe, "task": run.spec.task, "seed": run.spec.seed,
                         "error": (run.error or "").splitlines()[0] if run.error else None} for run in table.failed_runs],
        "commands": table.commands,
        "produced_with": table.produced_with,
        "data": table.data,
        "data_hashes": table.data_hashes,
    }


def _json_row(framed: FramedTable, index: int) -> dict[str, Any]:
    row, record = framed.table.rows[index], framed.frame.iloc[index]
    tasks = {task: {**{stat: number(record[f"{stem}.{stat}"]) for stat in ("mean", "std", "n", "failed")},
                    "values": {str(seed): v for seed, v in sorted(row.values.get(task, {}).items())},
                    "failed_seeds": sorted(row.failed.get(task, ()))}
             for task, stem in framed.columns.items()}
    significance = {}
    for reference in REFERENCES:
        comparison = framed.comparisons.get(reference, {}).get(row.name)
        if comparison is not None:
            r = comparison.result
            significance[reference] = {"test": r.test, "pairs": r.pairs, "mean_difference": r.mean_difference, "p": r.p,
                                       "p_holm": comparison.p_holm, "compared": comparison.compared, "better": comparison.better}
    return {
        "name": row.name, "kind": row.kind, "label": record["label"], "markers": record["markers"], "tasks": tasks,
        "avg": {"mean": number(record["avg.mean"]), "std": number(record["avg.std"]), "n": number(record["avg.n"]),
                "values": complete_average(row, framed.table)},
        "gap_closed": number(record["gap_closed"]), "avg_rank": number(record["avg_rank"]),
        "params": number(record["params"]), "macs": number(record["macs"]), "significance": significance,
    }


# --------------------------------------------------------------------------- LaTeX

_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                  "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
# Symbols the default LaTeX fonts lack as text; the math forms print everywhere.
_LATEX_SYMBOLS = {"<": "$<$", ">": "$>$", "|": r"\textbar{}", "±": r"$\pm$", "→": r"$\rightarrow$", "−": r"$-$", "≥": r"$\geq$",
                  "✗": r"$\times$", "—": "---", "–": "--", "†": r"\dag{}", "‡": r"\ddag{}", "…": r"\ldots{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(c, _LATEX_SYMBOLS.get(c, c)) for c in text)


def latex_inline(text: str) -> str:
    """Markdown inline text (`code`, **bold**) as LaTeX."""
    parts = re.split(r"(`[^`]*`|\*\*[^*]+\*\*)", text)
    out = []
    for part in parts:
        if part.startswith("`") and part.endswith("`") and len(part) > 1:
            out.append(r"\texttt{" + latex_escape(part[1:-1]) + "}")
        elif part.startswith("**") and part.endswith("**") and len(part) > 3:
            out.append(r"\textbf{" + latex_escape(part[2:-2]) + "}")
        else:
            out.append(latex_escape(part))
    return "".join(out)


def latex_text(framed_tables: Sequence[FramedTable], title: str, host: Host | None) -> str:
    """Each table as a booktabs ``table`` float (pandas' Styler), captioned like the Markdown page."""
    lines = [f"% Leaderboard: {title}. Rendered by cdkd-bench {cdkd_bench.__version__}; needs \\usepackage{{booktabs}}.", ""]
    if not framed_tables:
        return "\n".join([*lines, f"% {EMPTY_STORE}", ""])
    for index, framed in enumerate(framed_tables, start=1):
        lines += [_latex_table(framed, host, index), ""]
    return "\n".join(lines)


def _latex_table(framed: FramedTable, host: Host | None, index: int) -> str:
    cells = [[latex_inline(cell) for cell in row] for row in text_rows(framed)]
    columns = [latex_escape(name) for name in header(framed)]
    frame = pd.DataFrame(cells, columns=columns)
    caption = " ".join(latex_inline(text) for text in [*caption_paragraphs(framed, host), *framed.table.flags])
    label = f"tab:{framed.table.protocol.suite}-{index}"
    styler = frame.style.hide(axis="index")
    return str(styler.to_latex(hrules=True, column_format="l" + "r" * (len(columns) - 1), caption=caption, label=label,
                               position_float="centering", environment="table"))

