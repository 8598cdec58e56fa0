"""Frozen run specs, their canonical JSON, and the hashes that identify runs and teachers."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

# Bump whenever the engine changes what a run computes: every stored result is keyed by it.
# 2: the CPU thread count / CUDA precision (``numerics``) joined run and teacher identity; runs
#    store evaluated checkpoints and the selection rule left their identity.
# 3: channels-last inputs and networks, fused AdamW, and augmentation parameters drawn in one
#    batch from a generator on the device change the bits; one thread per run by default.
# 4: augmentation parity (students' source batches get the suite's policy too; the teacher's
#    outputs on them are computed per step), data identity (content hashes of the domains'
#    images) and the target's evaluation protocol joined run identity.
PROTOCOL_VERSION = 4


def canonical_json(obj: Any) -> str:
    """One spelling per value: sorted keys, no spaces, floats as Python writes them."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def digest(obj: Any, length: int = 16) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]


def derive_seed(seed: int, purpose: str) -> int:
    """An independent seed for one purpose (weights, batch order, …) from a run's seed."""
    return int(hashlib.sha256(f"{seed}:{purpose}".encode()).hexdigest()[:8], 16)


@dataclass(frozen=True)
class TeacherSpec:
    """Exactly what a teacher depends on, and nothing else: tasks sharing a source share it."""

    suite: str
    source: str
    source_version: int
    arch: str
    teacher_recipe: str
    pretrained: bool
    num_classes: int
    image_size: int
    steps: int
    """The teacher part of the budget, by its numbers (not its name: budgets with the same teacher numbers share teachers)."""
    batch_size: int
    lr: float
    weight_decay: float
    seed: int
    augmentation: dict[str, Any] | None = None
    numerics: str = ""
    """The device kind and CPU thread count the teacher is trained with (see compute.numerics)."""
    source_data: str = ""
    """Content hash of the source domain's images and labels as this machine generates or decodes them."""
    protocol: int = PROTOCOL_VERSION
    # An adapted teacher (teacher_recipe other than "source") also depends on the target it was adapted to,
    # the unlabelled images it saw there, and its recipe's resolved hparams and component versions.
    target: str = ""
    target_version: int = 0
    target_data: str = ""
    target_evaluation: str = ""
    """Which target images the adaptation saw, unlabelled: ``test split`` (the train split) or ``transductive`` (all)."""
    recipe_hparams: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    recipe_versions: dict[str, int] = dataclasses.field(default_factory=dict)
    weights: str = ""
    """Content hash of the local weights file the teacher started from (``--teacher-weights``); "" for none or the published ones."""
    backbone_lr_mult: float = 1.0
    """The teacher's body learns at ``lr`` times this (a pretrained teacher is fine-tuned like a pretrained student)."""

    @property
    def adapted(self) -> bool:
        return self.teacher_recipe != SOURCE_TEACHER

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if not self.adapted:  # a source teacher depends on none of them: its key stays what it was before they existed
            for name in _ADAPTATION_FIELDS:
                data.pop(name)
        for name, default in _LATER_TEACHER_FIELDS.items():  # likewise at their defaults
            if data[name] == default:
                data.pop(name)
        return data

    @property
    def key(self) -> str:
        return digest(self.to_dict())

    @property
    def label(self) -> str:
        """How logs name this teacher."""
        where = f"teacher {self.arch} on {self.source} (seed {self.seed})"
        return f"{where} adapted to {self.target} by {self.teacher_recipe}" if self.adapted else where


SOURCE_TEACHER = "source"
"""The teacher recipe of a teacher trained on labelled source data only."""
_ADAPTATION_FIELDS = ("target", "target_version", "target_data", "target_evaluation", "recipe_hparams", "recipe_versions")


_LATER_TEACHER_FIELDS: dict[str, Any] = {"weights": "", "backbone_lr_mult": 1.0}
_LATER_RUN_FIELDS: dict[str, Any] = {"student_pretrained": False, "student_weights": "", "search": None}


@dataclass(frozen=True)
class RunSpec:
    """One student run: a task, a teacher, a student, a recipe with resolved hparams, a seed.

    ``hparams`` maps each recipe component to all of its hparam values, defaults included,
    so a changed default changes the hash.
    """

    suite: str
    task: str
    source: str
    target: str
    target_version: int
    teacher: TeacherSpec
    student_arch: str
    recipe: str
    hparams: dict[str, dict[str, Any]]
    method_versions: dict[str, int]
    label_regime: str
    budget: str
    steps: int
    batch_size: int
    lr: float
    weight_decay: float
    seed: int
    numerics: str = ""
    """The device kind and CPU thread count the student is trained with (see compute.numerics)."""
    eval_points: int = 1
    backbone_lr_mult: float = 1.0
    source_augmentation: dict[str, Any] | None = None
    """The policy applied to the student's source batches (the suite's, under augmentation parity), or None."""
    target_data: str = ""
    """Content hash of the target domain's images and labels (see TeacherSpec.source_data)."""
    evaluation: str = "test split"
    """How the target is evaluated: ``test split`` or ``transductive`` (every target image, unlabelled, for training and evaluation)."""
    protocol: int = PROTOCOL_VERSION
    student_pretrained: bool = False
    """The student starts from its architecture's published weights (or ``student_weights``), inputs normalised for them."""
    student_weights: str = ""
    """Content hash of the local weights file the student started from (``--student-weights``)."""
    search: dict[str, int] | None = None
    """For a run of an hparam search (``trials`` > 1): ``{"trials": N, "hparam_seed": s, "trial": i, "seed": the search
    seed, on which every trial ran}``; None otherwise."""

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for name, default in _LATER_RUN_FIELDS.items():  # absent at their defaults: run ids made before they existed stay valid
            if data[name] == default:
                data.pop(name)
        for name, default in _LATER_TEACHER_FIELDS.items():  # likewise inside the teacher
            if data["teacher"][name] == default:
                data["teacher"].pop(name)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSpec:
        """A spec read back from the store; rows written before a field existed get its default."""
        fields = dict(data)
        teacher = dict(fields["teacher"])
        teacher.setdefault("protocol", 1)
        teacher.pop("budget", None)  # protocols 1-3 named the budget; it is in the run spec anyway
        fields["teacher"] = TeacherSpec(**teacher)
        fields.setdefault("protocol", 1)
        fields.pop("selection", None)  # protocol 1 kept the selection rule in the spec
        return cls(**fields)

    @property
    def run_id(self) -> str:
        return digest(self.to_dict())

    @property
    def components(self) -> tuple[str, ...]:
        return tuple(self.recipe.split("+"))
