"""The checkpoint with the highest accuracy on the held-out source validation split.

Training-domain validation of DomainBed (Gulrajani & Lopez-Paz 2021, "In Search of Lost
Domain Generalization", ICLR): honest, since it reads no target label, but it rewards
fitting the source, which is not what adaptation is after.
"""

from __future__ import annotations

from collections.abc import Mapping

from cdkd_bench import RegisterSelectors, Selector, hookimpl

from .common import best_checkpoint, scorer

METRIC = "source_val.acc"


def choose_source_val(history: list[Mapping[str, float]]) -> int:
    return best_checkpoint(history, METRIC, highest=True)


@hookimpl
def cdkd_register_selectors(register: RegisterSelectors) -> None:
    register(Selector("source_val", choose_source_val, needs=(METRIC,), score=scorer(METRIC, highest=True),
                      description="the checkpoint with the highest source validation accuracy (DomainBed's training-domain validation)"))
