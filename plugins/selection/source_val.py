"""The checkpoint with the highest accuracy on the held-out source validation split.

Training-domain validation of DomainBed (Gulrajani & Lopez-Paz 2021, "In Search of Lost
Domain Generalization", ICLR): honest, since it reads no target label, but it rewards
fitting the source, which is not what adaptation is after.
"""

from __future__ import annotations

from cdkd_bench import RegisterSelectors, hookimpl

from .common import metric_rule


@hookimpl
def cdkd_register_selectors(register: RegisterSelectors) -> None:
    register(metric_rule("source_val", "source_val.acc", highest=True,
                         description="the checkpoint with the highest source validation accuracy (DomainBed's training-domain validation)"))
