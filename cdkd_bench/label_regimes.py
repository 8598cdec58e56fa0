"""Label regimes: which target labels a student run may see, and exactly which images carry them.

- ``uda``: no target labels (unsupervised domain adaptation). Only a component that declares
  ``uses_target_labels`` (the ``target_oracle`` reference row) is shown any.
- ``ssda-K``: K labelled images per class from the target *train* split (semi-supervised
  domain adaptation, the protocol of Saito et al. 2019, "Semi-supervised domain adaptation
  via minimax entropy"), plus up to ``VALIDATION_SHOTS`` further labelled images per class
  that are never trained on and only score checkpoints (``target_val.acc``, read by the
  ``target_val`` selection rule), as that paper's validation shots do.
- ``sup``: every target train label (the setting of the original cross-domain distillation
  write-up); no labelled target validation images are held out.

The labelled images are drawn per class from a generator seeded by the run seed and the
target domain only, so every recipe of a (task, seed) sees the same ones. They never come
from the images a table is scored on: under a labelled regime the target is scored on its
test split, the transductive protocol included.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

import torch

from cdkd_bench.errors import UserError
from cdkd_bench.spec import derive_seed

UDA = "uda"
SUP = "sup"
VALIDATION_SHOTS = 3
_SSDA = re.compile(r"ssda-([1-9][0-9]{0,3})")
REGIME_FORMS = ("uda", "ssda-K (K labelled target images per class, e.g. ssda-3)", "sup")


@dataclass(frozen=True)
class LabelRegime:
    name: str
    shots: int | None = None
    """K of ``ssda-K``; None for ``uda`` (no labels) and ``sup`` (every label)."""

    @property
    def reveals_target_labels(self) -> bool:
        return self.name != UDA

    @property
    def has_target_validation(self) -> bool:
        return self.shots is not None


def parse_regime(text: str) -> LabelRegime:
    """``uda``, ``sup`` or ``ssda-K``; anything else is one sentence."""
    if text in (UDA, SUP):
        return LabelRegime(text)
    match = _SSDA.fullmatch(text)
    if match is None:
        raise UserError(f"label regime {text!r} is not one of: {', '.join(REGIME_FORMS)}")
    return LabelRegime(text, int(match.group(1)))


def check_shots_fit(regime: LabelRegime, labels: torch.Tensor, num_classes: int, domain: str) -> None:
    """``ssda-K`` needs K train images in every class of the target's train split."""
    if regime.shots is None:
        return
    counts = torch.bincount(labels.long(), minlength=num_classes)
    smallest = int(counts.min())
    if smallest < regime.shots:
        label = int(counts.argmin())
        raise UserError(f"label regime {regime.name!r} asks for {regime.shots} labelled images per class, but class {label} of "
                        f"target {domain!r} has only {smallest} train images; use ssda-{max(smallest, 1)} or fewer shots")


def labelled_target_indices(regime: LabelRegime, labels: torch.Tensor, domain: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices into the target train split of (the labelled training images, the labelled validation images)."""
    everything = torch.arange(len(labels))
    empty = everything[:0]
    if not regime.reveals_target_labels:
        return empty, empty
    if regime.shots is None:
        return everything, empty
    generator = torch.Generator().manual_seed(derive_seed(seed, f"labelled-target:{zlib.crc32(domain.encode())}"))
    shots, validation = [], []
    for label in labels.unique(sorted=True):
        members = torch.nonzero(labels == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        shots.append(members[: regime.shots])
        validation.append(members[regime.shots : regime.shots + VALIDATION_SHOTS])
    return torch.cat(shots).sort().values, torch.cat(validation).sort().values
