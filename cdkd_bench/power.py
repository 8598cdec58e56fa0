"""What difference a table can detect: the minimal detectable difference of a paired comparison over seeds.

Two recipes of one task and seed share the teacher, the student's initial weights and the
source batches, so their accuracies are compared seed by seed (a paired design). With n
seeds and a standard deviation ``sd`` of the per-seed differences, a two-sided paired
t-test at level α detects a true difference δ with probability

    P(|T| > t_{1-α/2, n-1}),  T ~ noncentral t(n-1, δ·√n / sd),

and the minimal detectable difference (MDD) is the δ at which that probability is the
wanted power. It says how far apart two methods must be before the table can tell them
apart; a table whose MDD is larger than the differences it shows cannot rank them.
"""

from __future__ import annotations

import math

ALPHA = 0.05
POWER = 0.8


def paired_power(difference: float, sd: float, n: int, alpha: float = ALPHA) -> float:
    """Probability that a two-sided paired t-test over ``n`` pairs rejects 'no difference' when the truth is ``difference``."""
    from scipy import stats  # here, not at the top: light commands (leaderboard) should not pay for scipy unless they need it

    if n < 2:
        raise ValueError("a paired t-test needs at least 2 pairs")
    df = n - 1
    critical = stats.t.ppf(1 - alpha / 2, df)
    shift = abs(difference) * math.sqrt(n) / sd
    upper = float(stats.nct.sf(critical, df, shift))
    lower = float(stats.nct.cdf(-critical, df, shift))  # rejecting with the wrong sign: tiny unless shift is near 0
    # scipy's noncentral t returns NaN for some far-tail probabilities; there they are 0 (or 1).
    if math.isnan(upper):
        upper = 1.0 if shift > critical else 0.0
    if math.isnan(lower):
        lower = 0.0
    return upper + lower


def minimal_detectable_difference(sd: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest true difference a paired t-test over ``n`` pairs with spread ``sd`` detects with ``power``."""
    from scipy import optimize, stats

    if n < 2:
        raise ValueError("a paired t-test needs at least 2 pairs")
    if sd <= 0:
        return 0.0
    # The t-quantile rule of thumb is within a few percent of the root; three times it brackets it.
    upper = 3 * (stats.t.ppf(1 - alpha / 2, n - 1) + stats.t.ppf(power, n - 1)) * sd / math.sqrt(n)
    while paired_power(upper, sd, n, alpha) < power:
        upper *= 2
    return float(optimize.brentq(lambda d: paired_power(d, sd, n, alpha) - power, 0.0, upper, xtol=1e-9))
