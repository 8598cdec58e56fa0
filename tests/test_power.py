"""The minimal detectable difference, checked against a simulated paired t-test and the textbook approximation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from cdkd_bench.power import minimal_detectable_difference, paired_power


@pytest.mark.parametrize(("sd", "n"), [(1.0, 5), (2.5, 3), (0.7, 10)])
def test_a_simulated_paired_t_test_rejects_at_the_mdd_with_80_percent_power(sd: float, n: int) -> None:
    mdd = minimal_detectable_difference(sd, n)
    rng = np.random.default_rng(0)
    trials = 40_000
    differences = rng.normal(mdd, sd, size=(trials, n))
    t = differences.mean(axis=1) / (differences.std(axis=1, ddof=1) / math.sqrt(n))
    rejected = np.abs(t) > stats.t.ppf(0.975, n - 1)
    # 40,000 trials: the standard error of a proportion near 0.8 is 0.002
    assert abs(rejected.mean() - 0.80) < 0.01


def test_mdd_is_near_the_normal_approximation_for_many_seeds_and_above_it_for_few() -> None:
    sd = 2.0
    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.80)  # 2.80: the large-sample rule of thumb
    assert minimal_detectable_difference(sd, 200) == pytest.approx(z * sd / math.sqrt(200), rel=0.02)
    # With 5 seeds the t distribution's heavier tails cost more than the normal rule admits.
    assert minimal_detectable_difference(sd, 5) > 1.2 * z * sd / math.sqrt(5)


def test_power_grows_with_the_difference_and_the_seeds() -> None:
    assert paired_power(0.0, 1.0, 5) == pytest.approx(0.05, abs=1e-9)  # no difference: the test's level
    assert paired_power(1.0, 1.0, 5) < paired_power(2.0, 1.0, 5) < paired_power(2.0, 1.0, 10)
    assert minimal_detectable_difference(1.0, 10) < minimal_detectable_difference(1.0, 5)
    assert minimal_detectable_difference(0.0, 5) == 0.0
    with pytest.raises(ValueError, match="at least 2"):
        minimal_detectable_difference(1.0, 1)
