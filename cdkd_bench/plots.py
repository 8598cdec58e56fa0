"""A table's plots as inline SVG, byte-identical from run to run.

matplotlib draws on an Agg canvas of its own (no pyplot, no global backend) and writes SVG with
the glyphs as paths (no font is needed to view it), a fixed ``svg.hashsalt`` (its ids are
otherwise random per save) and no date or creator metadata. Each figure's ids get a prefix of
their own, since several SVGs share one HTML page and ids must be unique in it.
"""

from __future__ import annotations

import html
import io
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cdkd_bench.leaderboard import _short_task
from cdkd_bench.table_formats import number, si
from cdkd_bench.table_frame import COMPETITORS, FramedTable

if TYPE_CHECKING:  # matplotlib loads only when a page with plots is drawn
    from matplotlib.figure import Figure

SALT = "cdkd-bench"
STUDENT_KINDS = (*COMPETITORS, "upper_bound")
MARKERS = {"baseline": "s", "method": "o", "upper_bound": "^", "teacher": "D", "source_teacher": "d"}
# Text kept small: the figures are read on a page beside their table.
STYLE: dict[Any, Any] = {"svg.hashsalt": SALT, "svg.fonttype": "path", "font.size": 8.0, "axes.titlesize": 9.0, "legend.fontsize": 7.0}
SVG_METADATA = {"Date": None, "Creator": None, "Format": None, "Type": None}


@dataclass(frozen=True)
class Plot:
    title: str
    svg: str | None
    """Inline SVG markup; None when the plot could not be drawn (``caption`` says why)."""
    caption: str
    """Markdown inline text."""


def table_plots(framed: FramedTable, prefix: str, inflation: dict[str, float] | None, inflation_note: str) -> list[Plot]:
    """Accuracy against compute, per-task accuracy, and (where ``inflation`` is given) what oracle selection adds."""
    return [accuracy_vs_macs(framed, f"{prefix}-macs"), per_task_bars(framed, f"{prefix}-tasks"),
            inflation_bars(inflation, f"{prefix}-oracle", inflation_note, framed.table.protocol.selection)]


def svg_markup(figure: Figure, prefix: str, title: str) -> str:
    """The figure as SVG for inlining in HTML: no XML prolog or doctype, ids prefixed, SVG 2 ``href``."""
    import matplotlib

    with matplotlib.rc_context(STYLE):
        buffer = io.StringIO()
        figure.savefig(buffer, format="svg", metadata=SVG_METADATA, bbox_inches="tight")
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg"):]
    # The namespace declarations are URLs, though nothing fetches them; an HTML parser puts <svg> in its namespace without them.
    svg = re.sub(r' xmlns(:xlink)?="[^"]*"', "", svg).replace("xlink:href=", "href=")
    svg = re.sub(r'\bid="([^"]+)"', rf'id="{prefix}-\1"', svg)
    svg = re.sub(r'href="#([^"]+)"', rf'href="#{prefix}-\1"', svg)
    svg = re.sub(r"url\(#([^)]+)\)", rf"url(#{prefix}-\1)", svg)
    label = html.escape(title.replace("`", ""), quote=True)
    return svg.replace("<svg ", f'<svg role="img" aria-label="{label}" ', 1).strip() + "\n"


def _draw(width: float, height: float, draw: Callable[[Figure], None], prefix: str, title: str) -> str:
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with matplotlib.rc_context(STYLE):
        figure = Figure(figsize=(width, height))
        FigureCanvasAgg(figure)
        draw(figure)
        return svg_markup(figure, prefix, title)


def accuracy_vs_macs(framed: FramedTable, prefix: str) -> Plot:
    title = "Accuracy (avg) against the student's MACs per image"
    frame = framed.frame
    points = [(r["row"], r["kind"], number(r["macs"]), number(r["avg.mean"]), number(r["avg.std"]))
              for r in frame.to_dict("records") if r["kind"] in STUDENT_KINDS]
    drawn = [p for p in points if p[2] is not None and p[3] is not None]
    left_out = [p[0] for p in points if p not in drawn]
    if not drawn:
        return Plot(title, None, "No student row has both an avg and a stored MAC count (runs made before MACs were "
                    "recorded lack them), so there is nothing to place on a compute axis.")
    teacher = next((number(r["avg.mean"]) for r in frame.to_dict("records") if r["kind"] == "teacher"), None)

    def draw(figure: Figure) -> None:
        axes = figure.add_subplot()
        for name, kind, macs, mean, std in drawn:
            axes.errorbar([macs], [mean], yerr=None if std is None else [std], fmt=MARKERS[kind], capsize=3, label=name)
        if teacher is not None:
            axes.axhline(teacher, linestyle="--", color="0.4", linewidth=1, label=f"teacher {framed.table.protocol.teacher_arch} (avg)")
        low, high = min(p[2] for p in drawn), max(p[2] for p in drawn)
        if high > 10 * low:
            axes.set_xscale("log")
        else:  # usually one student architecture: every point on one MAC count, given some room
            axes.set_xlim(low * 0.8, high * 1.25)
        axes.xaxis.set_major_formatter(lambda value, _: si(int(value)) if value >= 1 else f"{value:g}")
        axes.set_xlabel("student MACs per image")
        axes.set_ylabel("avg target test accuracy (%)")
        axes.set_title(title)
        axes.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
        axes.grid(alpha=0.3)

    caption = ("Each student row's avg over the table's common seeds (error bars: sample std over those seeds) against its "
               "multiply-accumulates per image; the dashed line is the teacher's avg.")
    if left_out:
        caption += " Left out for want of an avg or a MAC count: " + ", ".join(f"`{name}`" for name in left_out) + "."
    return Plot(title, _draw(6.4, 3.4, draw, prefix, title), caption)


def per_task_bars(framed: FramedTable, prefix: str) -> Plot:
    title = "Accuracy per task"
    frame = framed.frame
    suite = framed.table.protocol.suite
    stems = list(framed.columns.values())
    labels = [_short_task(task, suite) for task in framed.columns]
    records = frame.to_dict("records")

    def draw(figure: Figure) -> None:
        axes = figure.add_subplot()
        width = 0.8 / max(1, len(records))
        for i, record in enumerate(records):
            means = [number(record[f"{stem}.mean"]) for stem in stems]
            spreads = [number(record[f"{stem}.std"]) for stem in stems]
            positions = [t + (i - (len(records) - 1) / 2) * width for t in range(len(stems))]
            axes.bar(positions, [math.nan if m is None else m for m in means], width,
                     yerr=[0.0 if s is None else s for s in spreads], capsize=2, label=record["row"])
        axes.set_xticks(range(len(stems)), labels)
        axes.set_ylabel("target test accuracy (%)")
        axes.set_title(title)
        axes.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
        axes.grid(axis="y", alpha=0.3)

    caption = ("Each row's mean over its seeds on each task; error bars are the sample std over seeds "
               "(none for a single seed; a missing bar is a task without a finished run).")
    return Plot(title, _draw(max(6.4, 1.2 + 0.25 * len(stems) * len(records)), 3.4, draw, prefix, title), caption)


def inflation_bars(inflation: dict[str, float] | None, prefix: str, note: str, selection: str) -> Plot:
    title = f"What oracle selection adds over `{selection}`"
    if not inflation:
        return Plot(title, None, note)
    names = list(inflation)

    def draw(figure: Figure) -> None:
        axes = figure.add_subplot()
        axes.barh(range(len(names)), [inflation[name] for name in names], color="tab:red")
        axes.set_yticks(range(len(names)), names)
        axes.invert_yaxis()  # the table's row order, top to bottom
        axes.axvline(0, color="0.2", linewidth=0.8)
        axes.set_xlabel(f"avg under oracle − avg under {selection} (points)")
        axes.set_title(title.replace("`", ""))
        axes.grid(axis="x", alpha=0.3)

    return Plot(title, _draw(6.4, 1.0 + 0.3 * len(names), draw, prefix, title), note)
