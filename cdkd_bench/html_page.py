"""A suite's leaderboard as one self-contained static HTML page.

Everything is inline: the CSS, and every plot as SVG. The page names no script, stylesheet, font or
image to fetch, and its Content-Security-Policy forbids fetching any, so it reads the same offline,
from a file, an archive or a mail attachment, and leaks no reader's visit anywhere.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import cdkd_bench
from cdkd_bench.html_text import blocks_to_html, inline, table_html
from cdkd_bench.leaderboard import EMPTY_STORE, table_footer, table_heading
from cdkd_bench.plots import Plot
from cdkd_bench.plugins import Host
from cdkd_bench.table_caption import caption_paragraphs
from cdkd_bench.table_formats import header, text_rows
from cdkd_bench.table_frame import FramedTable

# Inline styles only; nothing else may load (no `default-src`, so no scripts, images, fonts or connections).
CONTENT_SECURITY_POLICY = "default-src 'none'; style-src 'unsafe-inline'"
CSS = """
body { margin: 0; color: #1b1b1b; background: #fff; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
main { max-width: 72rem; margin: 0 auto; padding: 1.5rem; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; margin-top: 2.5rem; border-top: 1px solid #ddd; padding-top: 1rem; }
code { font: 0.9em ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; background: #f3f3f3; padding: 0 0.2em; }
.scroll { overflow-x: auto; margin: 1rem 0; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { padding: 0.3rem 0.6rem; border-bottom: 1px solid #e3e3e3; text-align: left; white-space: nowrap; }
thead th { border-bottom: 2px solid #444; }
.num { text-align: right; }
td:first-child { white-space: normal; min-width: 14rem; }
tr.teacher td, tr.source_teacher td { color: #555; }
tr.upper_bound td { color: #555; font-style: italic; }
tr.baseline td { background: #f7f7f7; }
.caption { font-size: 0.9rem; color: #333; }
figure { margin: 1.5rem 0; }
figure svg { max-width: 100%; height: auto; }
figcaption, .note { font-size: 0.85rem; color: #444; }
nav ol { padding-left: 1.2rem; }
"""


def html_page(framed_tables: Sequence[FramedTable], plots: Sequence[Sequence[Plot]], title: str, host: Host | None) -> str:
    plain_title = title.replace("`", "")
    body = [f"<h1>Leaderboard: {inline(title)}</h1>",
            f'<p class="note">Rendered by cdkd-bench {html.escape(cdkd_bench.__version__)}. '
            "This page is self-contained: its styles and plots are inside it and it loads nothing.</p>"]
    if not framed_tables:
        body.append(f"<p>{inline(EMPTY_STORE)}</p>")
    else:
        body += ["<nav><ol>", *(f'<li><a href="#table-{i}">{inline(_heading_text(f, host))}</a></li>'
                                for i, f in enumerate(framed_tables, start=1)), "</ol></nav>"]
    for index, (framed, table_plots) in enumerate(zip(framed_tables, plots, strict=True), start=1):
        body += _section(framed, table_plots, index, host)
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Leaderboard: {html.escape(plain_title)}</title>",
        f"<style>{CSS}</style>",
        "</head>",
        "<body>",
        "<main>",
        *body,
        "</main>",
        "</body>",
        "</html>",
        "",
    ])


def _heading_text(framed: FramedTable, host: Host | None) -> str:
    return table_heading(framed.table, host)[0].removeprefix("## ")


def _section(framed: FramedTable, plots: Sequence[Plot], index: int, host: Host | None) -> list[str]:
    table = framed.table
    out = [f'<section id="table-{index}">', *blocks_to_html(table_heading(table, host))]
    out += ['<div class="caption">', *(f"<p>{inline(paragraph)}</p>" for paragraph in caption_paragraphs(framed, host)), "</div>"]
    if table.flags:
        out += blocks_to_html([f"- {flag}" for flag in table.flags])
    head = header(framed)
    out += table_html(head, text_rows(framed), ["", *["num"] * (len(head) - 1)], [row.kind for row in table.rows])
    for plot in plots:
        if plot.svg is None:
            out.append(f'<p class="note"><strong>{inline(plot.title)}:</strong> {inline(plot.caption)}</p>')
        else:
            out += ["<figure>", plot.svg.rstrip("\n"), f"<figcaption><strong>{inline(plot.title)}.</strong> {inline(plot.caption)}</figcaption>",
                    "</figure>"]
    return [*out, *blocks_to_html(table_footer(table, host)), "</section>"]
