"""The Markdown the leaderboard writes, as HTML: headings, paragraphs, lists, pipe tables, `code` and **bold**.

Only that subset: the text under and above each table comes from this package, not from users.
Everything is escaped first, so a recipe or error message can never inject markup.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator, Sequence

_INLINE = re.compile(r"(`[^`]*`|\*\*[^*]+\*\*)")


def inline(text: str) -> str:
    out = []
    for part in _INLINE.split(text):
        if len(part) > 1 and part.startswith("`") and part.endswith("`"):
            out.append(f"<code>{html.escape(part[1:-1])}</code>")
        elif len(part) > 3 and part.startswith("**") and part.endswith("**"):
            out.append(f"<strong>{html.escape(part[2:-2])}</strong>")
        else:
            out.append(html.escape(part))
    return "".join(out)


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _blocks(lines: Sequence[str]) -> Iterator[list[str]]:
    """Runs of lines of one kind (table, list, paragraph, heading), split at blank lines and at a change of kind."""
    block: list[str] = []

    def kind(line: str) -> str:
        return "table" if line.startswith("|") else "list" if line.startswith("- ") else "heading" if line.startswith("#") else "text"

    for line in lines:
        if not line.strip():
            if block:
                yield block
            block = []
            continue
        if block and (kind(line) != kind(block[0]) or kind(line) == "heading"):
            yield block
            block = []
        block.append(line)
    if block:
        yield block


def blocks_to_html(lines: Sequence[str]) -> list[str]:
    out: list[str] = []
    for block in _blocks(lines):
        first = block[0]
        if first.startswith("#"):
            level = len(first) - len(first.lstrip("#"))
            out.append(f"<h{level}>{inline(first[level:].strip())}</h{level}>")
        elif first.startswith("- "):
            out += ["<ul>", *(f"<li>{inline(line[2:])}</li>" for line in block), "</ul>"]
        elif first.startswith("|"):
            out += table_html(_cells(first), [_cells(line) for line in block[2:]], ["num" if c.endswith(":") else "" for c in _cells(block[1])])
        else:
            out.append(f"<p>{inline(' '.join(block))}</p>")
    return out


def table_html(head: Sequence[str], rows: Sequence[Sequence[str]], classes: Sequence[str], row_classes: Sequence[str] = ()) -> list[str]:
    """A table of Markdown inline cells; ``classes`` per column (``num`` right-aligns), ``row_classes`` per row."""
    def attr(name: str) -> str:
        return f' class="{name}"' if name else ""

    out = ['<div class="scroll"><table>', "<thead><tr>" + "".join(f"<th{attr(c)}>{inline(h)}</th>" for h, c in zip(head, classes, strict=True))
           + "</tr></thead>", "<tbody>"]
    for index, row in enumerate(rows):
        row_class = row_classes[index] if index < len(row_classes) else ""
        out.append(f"<tr{attr(row_class)}>" + "".join(f"<td{attr(c)}>{inline(cell)}</td>" for cell, c in zip(row, classes, strict=True))
                   + "</tr>")
    return [*out, "</tbody></table></div>"]
