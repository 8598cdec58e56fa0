"""The checkpoint with the highest soft neighbourhood density on unlabelled target train images.

Saito et al. 2021 ("Tune it the Right Way: Unsupervised Validation of Domain Adaptation via
Soft Neighborhood Density", ICCV): target images whose predictions agree with their
neighbours' form dense clusters, which tracks target accuracy better than confidence alone.
Runs trained before cdkd-bench recorded the score cannot be selected by it.
"""

from __future__ import annotations

from cdkd_bench import RegisterSelectors, hookimpl

from .common import metric_rule


@hookimpl
def cdkd_register_selectors(register: RegisterSelectors) -> None:
    register(metric_rule("snd", "target_train.snd", highest=True,
                         description="the checkpoint with the highest soft neighbourhood density on unlabelled target images "
                                     "(Saito et al. 2021)"))
