"""The checkpoint at the end of training: needs no labels and cannot leak the test split."""

from __future__ import annotations

from collections.abc import Mapping

from cdkd_bench import RegisterSelectors, Selector, hookimpl


def choose_last(history: list[Mapping[str, float]]) -> int:
    return len(history) - 1


@hookimpl
def cdkd_register_selectors(register: RegisterSelectors) -> None:
    register(Selector("last", choose_last, oracle=False, description="the checkpoint at the end of training", default=True))
