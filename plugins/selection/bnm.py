"""The checkpoint with the highest batch nuclear-norm score on unlabelled target train images.

The BNM validator of Musgrave, Belongie & Lim 2022 ("Three New Validators and a Large-Scale
Benchmark Ranking for Unsupervised Domain Adaptation"), after the BNM loss of Cui et al. 2020:
the nuclear norm of the prediction matrix grows when predictions are both confident and
diverse. Runs trained before cdkd-bench recorded the score cannot be selected by it.

Its entry point is ``bnm_selection``: the adaptation method ``bnm`` holds the name ``bnm`` in
the entry-point group, while the two registries (methods, selection rules) keep their own names.
"""

from __future__ import annotations

from cdkd_bench import RegisterSelectors, hookimpl

from .common import metric_rule


@hookimpl
def cdkd_register_selectors(register: RegisterSelectors) -> None:
    register(metric_rule("bnm", "target_train.bnm", highest=True,
                         description="the checkpoint with the highest batch nuclear-norm score on unlabelled target images "
                                     "(Musgrave et al. 2022)"))
