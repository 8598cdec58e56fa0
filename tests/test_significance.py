"""The significance tests behind a table's markers, against numbers worked out here without the module's code path."""

from __future__ import annotations

import itertools
import math
import statistics

import pytest
from scipy.stats import t as student_t

from cdkd_bench.significance import MIN_WILCOXON_PAIRS, T_TEST, WILCOXON, compare, holm, paired_test


def exact_wilcoxon_p(differences: list[float]) -> float:
    """Two-sided exact p of the signed-rank statistic, by enumerating every sign pattern (no ties, no zeros)."""
    n = len(differences)
    assert len({abs(d) for d in differences}) == n and all(differences), "ties or zeros: no exact distribution"
    observed = sum(rank for rank, d in enumerate(sorted(differences, key=abs), start=1) if d > 0)
    totals = [sum(rank for rank, positive in enumerate(signs, start=1) if positive)
              for signs in itertools.product((False, True), repeat=n)]
    low = sum(w <= observed for w in totals) / len(totals)
    high = sum(w >= observed for w in totals) / len(totals)
    return min(1.0, 2 * min(low, high))


def t_test_p(differences: list[float]) -> float:
    """Two-sided paired t-test p from its formula: t = mean / (sd / √n) with n − 1 degrees of freedom."""
    n = len(differences)
    t = statistics.fmean(differences) / (statistics.stdev(differences) / math.sqrt(n))
    return 2 * float(student_t.sf(abs(t), n - 1))


def test_holm_matches_the_step_down_worked_by_hand() -> None:
    # sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → kept monotone: 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.6, 0.7]) == [1.0, 1.0]  # 2·0.6 capped at 1, and the larger p never adjusts lower
    assert holm([0.02]) == [0.02] and holm([]) == []


def test_five_pairs_use_the_paired_t_test() -> None:
    row, reference = [51.0, 52.0, 51.5, 53.0, 50.5], [50.0] * 5
    result = paired_test(row, reference)
    assert result is not None and result.test == T_TEST and result.pairs == 5
    assert result.p == pytest.approx(t_test_p([1.0, 2.0, 1.5, 3.0, 0.5]), rel=1e-9)
    assert result.mean_difference == pytest.approx(1.6)
    # Wilcoxon could not have said anything here: its smallest two-sided p with 5 pairs is 2/32
    assert exact_wilcoxon_p([1.0, 2.0, 1.5, 3.0, 0.5]) == pytest.approx(1 / 16)


def test_six_pairs_use_the_exact_wilcoxon_test() -> None:
    differences = [0.5, -1.25, 2.0, 3.5, 4.0, 5.75]
    result = paired_test([60 + d for d in differences], [60.0] * 6)
    assert MIN_WILCOXON_PAIRS == 6
    assert result is not None and result.test == WILCOXON and result.pairs == 6
    assert result.p == pytest.approx(exact_wilcoxon_p(differences), rel=1e-9)
    assert result.p != pytest.approx(t_test_p(differences), rel=1e-3)


def test_differences_without_spread_say_nothing() -> None:
    # scipy's t-test answers p = 0 for two identical gains; two seeds cannot support that
    same_gain = paired_test([70.0, 71.0], [40.0, 41.0])
    assert same_gain is not None and same_gain.p == 1.0 and same_gain.mean_difference == pytest.approx(30.0)
    no_difference = paired_test([50.0] * 6, [50.0] * 6)
    assert no_difference is not None and no_difference.p == 1.0
    assert paired_test([50.0], [40.0]) is None  # one pair is no test at all


def test_compare_corrects_over_the_rows_it_could_test() -> None:
    reference = [50.0, 51.0, 52.0, 53.0, 54.0, 55.0, 56.0, 57.0]
    gains = {"a": [1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5], "b": [-0.5, 1.0, -1.5, 2.0, -2.5, 3.0, -3.5, 4.25]}
    pairs = {name: ([r + g for r, g in zip(reference, gain, strict=True)], reference) for name, gain in gains.items()}
    pairs["c"] = ([60.0], [50.0])  # a single shared cell: not tested, not counted in the correction
    results = compare("source_only", pairs)
    assert set(results) == {"a", "b"}
    p_a, p_b = exact_wilcoxon_p(gains["a"]), exact_wilcoxon_p(gains["b"])
    assert p_a == pytest.approx(2 / 256)  # every sign positive: the most extreme of 2^8 patterns, both tails
    assert p_a < p_b
    # Holm over two: the smaller p doubled, the larger one as it is but never below the first
    assert results["a"].p_holm == pytest.approx(2 * p_a)
    assert results["b"].p_holm == pytest.approx(max(2 * p_a, p_b))
    assert results["a"].better and not results["b"].better
    assert results["a"].compared == results["b"].compared == 2


def test_a_significant_loss_is_not_better() -> None:
    results = compare("kd", {"worse": ([40.0 - 0.5 * i for i in range(8)], [50.0 + 0.25 * i for i in range(8)])})
    assert results["worse"].p_holm < 0.05 and results["worse"].result.mean_difference < 0
    assert not results["worse"].better
