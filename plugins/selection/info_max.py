"""The checkpoint with the highest information-maximisation score on unlabelled target train images.

The IM objective of SHOT (Liang, Hu & Feng 2020, "Do We Really Need to Access the Source
Data? Source Hypothesis Transfer for Unsupervised Domain Adaptation", ICML) used as a
validator: the entropy of the mean prediction minus the mean entropy, so confident
predictions count only when they are spread over the classes.
"""

from __future__ import annotations

from cdkd_bench import RegisterSelectors, hookimpl

from .common import metric_rule


@hookimpl
def cdkd_register_selectors(register: RegisterSelectors) -> None:
    register(metric_rule("info_max", "target_train.info_max", highest=True,
                         description="the checkpoint with the highest information-maximisation score on unlabelled target images "
                                     "(SHOT, Liang et al. 2020)"))
