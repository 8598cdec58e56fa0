"""The checkpoint with the highest accuracy on the labelled target validation shots of an ``ssda-K`` regime.

Semi-supervised domain adaptation validates on a few labelled target images per class that
are never trained on (Saito et al. 2019, "Semi-supervised Domain Adaptation via Minimax
Entropy", ICCV: three per class). Honest under ``ssda-K``: those labels are part of what the
regime reveals, and the images are not the ones tables are scored on. Runs of the ``uda`` and
``sup`` regimes have no such images, and a table of them under this rule is refused.
"""

from __future__ import annotations

from cdkd_bench import RegisterSelectors, hookimpl

from .common import metric_rule


@hookimpl
def cdkd_register_selectors(register: RegisterSelectors) -> None:
    register(metric_rule("target_val", "target_val.acc", highest=True,
                         description="the checkpoint with the highest accuracy on the ssda-K regime's labelled target validation shots "
                                     "(Saito et al. 2019)"))
