"""The table of installed method components (``cdkd-bench list methods --markdown``, docs/methods.md)."""

from __future__ import annotations

import dataclasses
import sys

from cdkd_bench.api import Method
from cdkd_bench.plugins import Host


def paper(method: type[Method]) -> str:
    """The first paragraph of the component's module docstring: its paper, by convention."""
    module = sys.modules.get(method.__module__)
    text = (module.__doc__ or "").strip() if module else ""
    return " ".join(text.split("\n\n")[0].split())


def reads(method: type[Method]) -> str:
    """What the component reads besides the student's outputs on labelled source data."""
    from cdkd_bench.testing import kit_method_info

    parts = []
    if method.needs_teacher:
        parts.append("teacher")
    if method.uses_target_labels:
        parts.append("target labels")
    elif method.uses_target:
        parts.append("unlabelled target")
    try:
        stages = method(method.Hparams(), kit_method_info()).intermediates
    except Exception:  # noqa: BLE001 - a component that cannot be built on the kit's networks shows its class attribute
        stages = method.intermediates
    if stages:
        parts.append("stages " + ", ".join(str(s) for s in stages))
    for domain, views in sorted(method.views.items()):
        parts.append(f"{domain} views {'/'.join(views)}")
    if method.owns_step:
        parts.append("owns the step")
    if method.before_evaluation is not Method.before_evaluation:
        parts.append("unlabelled target before evaluation")
    return "; ".join(parts) or "—"


def hparams(method: type[Method]) -> str:
    shown = []
    for f in dataclasses.fields(method.Hparams):
        space = f.metadata.get("search")
        shown.append(f"`{f.name}`={f.default!r} in {tuple(space)!r}" if space is not None else f"`{f.name}`={f.default!r}")
    return "; ".join(shown) or "—"


def methods_markdown(host: Host) -> str:
    lines = ["| name | family | paper | reads | hparams (default in search space) |", "|---|---|---|---|---|"]
    for entry in host.methods:
        method = entry.value
        cells = [f"`{entry.name}` v{method.version}", method.family, paper(method), reads(method), hparams(method)]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"
