"""The checkpoint whose predictions on unlabelled target train images have the lowest mean entropy.

Minimal-entropy validation of Morerio, Cavazza & Murino 2018 ("Minimal-Entropy Correlation
Alignment for Unsupervised Deep Domain Adaptation", ICLR): reads no label, but a student that
collapses onto a few classes is confident too, so it can pick a degenerate checkpoint.
"""

from __future__ import annotations

from cdkd_bench import RegisterSelectors, hookimpl

from .common import metric_rule


@hookimpl
def cdkd_register_selectors(register: RegisterSelectors) -> None:
    register(metric_rule("entropy", "target_train.entropy", highest=False,
                         description="the checkpoint with the lowest mean prediction entropy on unlabelled target images (Morerio et al. 2018)"))
