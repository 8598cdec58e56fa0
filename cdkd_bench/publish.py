"""Every publishing format of a suite's tables, rendered from one DataFrame per table.

The HTML page's last plot compares each table with the same runs under the ``oracle`` selection
rule (checkpoints chosen on target test labels): how much a result reported that way is inflated.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Sequence

from cdkd_bench.errors import UserError
from cdkd_bench.leaderboard import Protocol, Table, build_tables
from cdkd_bench.plots import Plot, table_plots
from cdkd_bench.plugins import Host
from cdkd_bench.store import StoredRun
from cdkd_bench.table_formats import csv_text, json_text, latex_text, markdown_page
from cdkd_bench.table_frame import COMPETITORS, FramedTable, complete_average, frame_table

ORACLE = "oracle"


def render_formats(runs: list[StoredRun], tables: list[Table], suite: str, host: Host | None, selection: str | None,
                   formats: Sequence[str]) -> dict[str, str]:
    """The text of each format in ``formats`` (md, csv, json, tex, html) for ``tables``, built from ``runs``."""
    title = f"suite `{suite}`"
    framed = [frame_table(table) for table in tables]
    texts = {}
    for name in dict.fromkeys(formats):
        if name == "md":
            texts[name] = markdown_page(framed, title, host)
        elif name == "csv":
            texts[name] = csv_text(framed)
        elif name == "json":
            texts[name] = json_text(framed, suite, title, host, selection)
        elif name == "tex":
            texts[name] = latex_text(framed, title, host)
        elif name == "html":
            from cdkd_bench.html_page import html_page  # matplotlib loads only for the page with plots

            texts[name] = html_page(framed, page_plots(runs, framed, host), title, host)
        else:
            raise ValueError(f"unknown leaderboard format {name!r}")
    return texts


def page_plots(runs: list[StoredRun], framed_tables: Sequence[FramedTable], host: Host | None) -> list[list[Plot]]:
    by_protocol, why_not = oracle_tables(runs, host)
    plots = []
    for index, framed in enumerate(framed_tables, start=1):
        inflation, note = oracle_inflation(framed.table, by_protocol, why_not, host)
        plots.append(table_plots(framed, f"t{index}", inflation, note))
    return plots


def _protocol_key(protocol: Protocol) -> Protocol:
    return dataclasses.replace(protocol, selection="")


def oracle_tables(runs: list[StoredRun], host: Host | None) -> tuple[dict[Protocol, Table], str]:
    """The same runs' tables under the oracle rule, by protocol without the rule; or why there are none."""
    if host is None or ORACLE not in host.selectors:
        return {}, (f"Not drawn: no selection rule named `{ORACLE}` is installed, and this plot is each row's avg under "
                    "that rule minus its avg under the table's rule.")
    try:
        tables = build_tables(runs, host, ORACLE)
    except UserError as exc:
        return {}, f"Not drawn: the `{ORACLE}` rule cannot be applied to these runs: {exc}."
    return {_protocol_key(table.protocol): table for table in tables}, ""


def oracle_inflation(table: Table, by_protocol: dict[Protocol, Table], why_not: str,
                     host: Host | None) -> tuple[dict[str, float] | None, str]:
    """Per competitor row, its avg under the oracle rule minus its avg under the table's rule (None with the reason)."""
    rule = table.protocol.selection
    if why_not:
        return None, why_not
    if rule == ORACLE:
        return None, f"Not drawn: this table's own rule is `{ORACLE}`, so there is no honest rule to compare it with."
    oracle = by_protocol.get(_protocol_key(table.protocol))
    if oracle is None:
        return None, f"Not drawn: the runs of this table give no table under the `{ORACLE}` rule."
    oracle_rows = {row.name: row for row in oracle.rows}
    inflation = {}
    for row in table.rows:
        twin = oracle_rows.get(row.name)
        honest = complete_average(row, table)
        inflated = complete_average(twin, oracle) if twin is not None else []
        if row.kind in COMPETITORS and honest and inflated:
            inflation[row.name] = statistics.fmean(inflated) - statistics.fmean(honest)
    if not inflation:
        return None, "Not drawn: no source-only or method row has an avg under both rules."
    description = host.selectors.get(ORACLE).description if host is not None else ""
    chosen = f" ({description})" if description else ""
    return inflation, (f"Each competitor row's avg when every run's checkpoint is chosen by `{ORACLE}`{chosen}, minus its avg "
                       f"under `{rule}`, each over its table's common seeds: what choosing checkpoints on the test labels "
                       "would add to the reported number. The oracle numbers are not results.")
