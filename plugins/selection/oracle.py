"""The checkpoint with the highest target test accuracy: the upper bound of any selection rule.

DomainBed's test-domain validation (Gulrajani & Lopez-Paz 2021, "In Search of Lost Domain
Generalization", ICLR), which the paper names an oracle. It reads the labels the numbers are
scored on, so it is never an honest result: ``oracle=True`` has every table it makes flagged.
"""

from __future__ import annotations

from collections.abc import Mapping

from cdkd_bench import RegisterSelectors, Selector, hookimpl

from .common import best_checkpoint, scorer

METRIC = "target_test.acc"


def choose_oracle(history: list[Mapping[str, float]]) -> int:
    return best_checkpoint(history, METRIC, highest=True)


@hookimpl
def cdkd_register_selectors(register: RegisterSelectors) -> None:
    register(Selector("oracle", choose_oracle, oracle=True, needs=(METRIC,), score=scorer(METRIC, highest=True),
                      description="the checkpoint with the highest target test accuracy (reads test labels: an upper bound)"))
