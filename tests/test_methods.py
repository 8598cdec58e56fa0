"""Every registered method passes the conformance kit plugin authors use."""

from __future__ import annotations

import pytest

from cdkd_bench.plugins import load_host
from cdkd_bench.testing import check_method

METHODS = [entry.value for entry in load_host().methods]


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
def test_method_conforms(method) -> None:
    terms = check_method(method)
    if method.needs_teacher or method.uses_target_labels:
        assert terms, f"{method.name} should add at least one loss term"


def test_source_only_adds_nothing_beyond_the_engine_baseline() -> None:
    from cdkd_plugins.methods.source_only import SourceOnly

    assert check_method(SourceOnly) == {}
