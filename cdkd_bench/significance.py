"""Paired significance tests of leaderboard rows against a reference row, Holm-corrected.

Pairs are (task, seed) cells both rows have. With at least ``MIN_WILCOXON_PAIRS`` pairs the
two-sided Wilcoxon signed-rank test is used (no normality assumption); below that its exact
distribution cannot reach p < 0.05 at all (with 5 pairs the smallest two-sided p is 1/16),
so the paired t-test is used instead.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scipy import stats

MIN_WILCOXON_PAIRS = 6
SIGNIFICANCE_LEVEL = 0.05
WILCOXON = "Wilcoxon signed-rank"
T_TEST = "paired t-test"


@dataclass(frozen=True)
class PairedTest:
    """One test of a row against a reference: which test, on how many pairs, its p-value and the mean difference."""

    test: str
    pairs: int
    p: float
    """Uncorrected two-sided p-value; 1.0 where the test is undefined (differences without any spread)."""
    mean_difference: float
    """Mean over the pairs of (row − reference), in points."""


@dataclass(frozen=True)
class Comparison:
    """A row against a reference after the Holm correction over every comparison with that reference."""

    row: str
    reference: str
    result: PairedTest
    p_holm: float
    compared: int
    """How many comparisons with this reference the correction covered."""

    @property
    def better(self) -> bool:
        return self.p_holm < SIGNIFICANCE_LEVEL and self.result.mean_difference > 0


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order (Holm 1979, Scand. J. Statist. 6:65-70).

    The i-th smallest of m p-values is multiplied by m - i + 1 (i from 1); a running maximum keeps the
    adjusted values in the order of the raw ones, and they are capped at 1.
    """
    m = len(p_values)
    adjusted = [0.0] * m
    running = 0.0
    for i, index in enumerate(sorted(range(m), key=lambda k: p_values[k])):
        running = max(running, min(1.0, (m - i) * p_values[index]))
        adjusted[index] = running
    return adjusted


def paired_test(row: Sequence[float], reference: Sequence[float]) -> PairedTest | None:
    """The two-sided paired test of ``row`` against ``reference`` (same order); None below 2 pairs."""
    if len(row) != len(reference):
        raise ValueError(f"paired samples differ in length: {len(row)} and {len(reference)}")
    differences = [a - b for a, b in zip(row, reference, strict=True)]
    n = len(differences)
    if n < 2:
        return None
    mean = statistics.fmean(differences)
    test = WILCOXON if n >= MIN_WILCOXON_PAIRS else T_TEST
    if not any(differences):
        return PairedTest(test, n, 1.0, 0.0)
    if test == T_TEST:
        # Identical differences have no spread: t is infinite and scipy would answer p = 0, which no
        # two seeds can support. Such a comparison says nothing, so it counts as p = 1.
        if statistics.stdev(differences) <= 1e-9 * max(1.0, abs(mean)):
            return PairedTest(test, n, 1.0, mean)
        p = float(stats.ttest_rel(row, reference).pvalue)
    else:
        p = float(stats.wilcoxon(row, reference).pvalue)  # zero differences dropped (scipy's default, Wilcoxon's own rule)
    return PairedTest(test, n, 1.0 if math.isnan(p) else p, mean)


def compare(reference: str, pairs: Mapping[str, tuple[Sequence[float], Sequence[float]]]) -> dict[str, Comparison]:
    """Every row of ``pairs`` (row → (its values, the reference's values)) tested against ``reference``,
    Holm-corrected over the rows that could be tested (at least 2 pairs)."""
    results = {name: result for name, (row, ref) in pairs.items() if (result := paired_test(row, ref)) is not None}
    names = list(results)
    adjusted = holm([results[name].p for name in names])
    return {name: Comparison(name, reference, results[name], p, len(names)) for name, p in zip(names, adjusted, strict=True)}
