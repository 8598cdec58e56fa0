"""What the built-in selection rules share: picking the checkpoint with the best value of one stored score.

Ties go to the latest of the tied checkpoints: the same score after more training is the
better bet, and it is what ``last`` picks when a score cannot tell checkpoints apart.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from cdkd_bench import Selector


def _score(checkpoint: Mapping[str, Any], key: str) -> float | None:
    value = checkpoint.get(key)
    if value is None:
        return None
    number = float(value)
    # NaN compares false with everything, so it would win or lose ties by accident: such a checkpoint
    # (a diverged student; SND of fewer than two images) is unrankable instead.
    return None if math.isnan(number) else number


def best_checkpoint(history: Sequence[Mapping[str, Any]], key: str, *, highest: bool) -> int:
    """The index of the checkpoint with the highest (or lowest) ``history[i][key]``, the latest among equals.

    Checkpoints without a usable value never win; when none has one, the last checkpoint is
    chosen. Tables never get there: they refuse a rule whose ``needs`` a run did not record,
    so this only keeps ``choose`` total for callers that skip that check.
    """
    chosen, best = len(history) - 1, -math.inf
    for index, checkpoint in enumerate(history):
        score = _score(checkpoint, key)
        if score is None:
            continue
        signed = score if highest else -score
        if signed >= best:  # >=, not >: a later checkpoint with an equal score replaces an earlier one
            chosen, best = index, signed
    return chosen


def scorer(key: str, *, highest: bool) -> Callable[[Mapping[str, Any]], float]:
    """A checkpoint's score for comparing hparam configurations (higher is better, so a lower-is-better value is negated);
    NaN when the checkpoint has no usable value, which a search never picks."""
    def score(checkpoint: Mapping[str, Any]) -> float:
        value = _score(checkpoint, key)
        if value is None:
            return math.nan
        return value if highest else -value

    return score


def metric_rule(name: str, key: str, *, highest: bool, description: str, oracle: bool = False) -> Selector:
    """A rule that picks the checkpoint with the best value of one stored metric (the latest among equals),
    declaring the metric it needs and a score a search compares configurations with."""
    def choose(history: list[Mapping[str, Any]]) -> int:
        return best_checkpoint(history, key, highest=highest)

    return Selector(name, choose, oracle=oracle, description=description, needs=(key,), score=scorer(key, highest=highest))
