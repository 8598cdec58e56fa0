"""docs/methods.md lists every registered component exactly as the registry describes it."""

from __future__ import annotations

from pathlib import Path

from cdkd_bench.method_table import methods_markdown

DOC = Path(__file__).resolve().parents[1] / "docs" / "methods.md"
START, END = "<!-- methods table: generated, do not edit by hand -->\n", "<!-- end of methods table -->"


def test_the_methods_page_matches_the_registry(host) -> None:
    text = DOC.read_text(encoding="utf-8")
    documented = text.split(START, 1)[1].split(END, 1)[0]
    assert documented == methods_markdown(host), "docs/methods.md is stale: regenerate it with `cdkd-bench list methods --markdown`"


def test_every_distillation_component_names_its_paper_and_can_distil_on_target(host) -> None:
    import dataclasses

    from cdkd_bench.method_table import paper

    for entry in host.methods:
        method = entry.value
        if method.family != "distillation":
            continue
        assert "https://arxiv.org/abs/" in paper(method), f"{entry.name} does not link its paper"
        domains = {f.name: f for f in dataclasses.fields(method.Hparams)}.get("domains")
        assert domains is not None and domains.default == "both", f"{entry.name} lacks the domains hparam (default both)"
