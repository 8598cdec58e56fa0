"""The checkpoint whose predictions on unlabelled target train images have the lowest mean entropy.

Minimal-entropy validation of Morerio, Cavazza & Murino 2018 ("Minimal-Entropy Correlation
Alignment for Unsupervised Deep Domain Adaptation", ICLR): reads no label, but a student that
collapses onto a few classes is confident too, so it can pick a degenerate checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping

from cdkd_bench import RegisterSelectors, Selector, hookimpl

from .common import best_checkpoint, scorer

METRIC = "target_train.entropy"


def choose_entropy(history: list[Mapping[str, float]]) -> int:
    return best_checkpoint(history, METRIC, highest=False)


@hookimpl
def cdkd_register_selectors(register: RegisterSelectors) -> None:
    register(Selector("entropy", choose_entropy, needs=(METRIC,), score=scorer(METRIC, highest=False),
                      description="the checkpoint with the lowest mean prediction entropy on unlabelled target images (Morerio et al. 2018)"))
