"""The checkpoint with the highest target test accuracy: the upper bound of any selection rule.

DomainBed's test-domain validation (Gulrajani & Lopez-Paz 2021, "In Search of Lost Domain
Generalization", ICLR), which the paper names an oracle. It reads the labels the numbers are
scored on, so it is never an honest result: ``oracle=True`` has every table it makes flagged.
"""

from __future__ import annotations

from cdkd_bench import RegisterSelectors, hookimpl

from .common import metric_rule


@hookimpl
def cdkd_register_selectors(register: RegisterSelectors) -> None:
    register(metric_rule("oracle", "target_test.acc", highest=True, oracle=True,
                         description="the checkpoint with the highest target test accuracy (reads test labels: an upper bound)"))
