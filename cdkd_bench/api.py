"""The public contracts between the host and its plugins."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import nn

DomainRole = Literal["source", "target"]
FAMILIES = ("baseline", "distillation", "adaptation")


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class DomainData:
    """One domain's images as uint8 ``(N, C, H, W)`` tensors with int64 labels."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


@dataclass(frozen=True)
class DataContext:
    """Where a domain may read files from (``data_root``) and keep its own cache."""

    data_root: Path | None
    cache_dir: Path


@dataclass(frozen=True)
class Domain:
    """A labelled image dataset with train and test splits.

    ``load`` returns the images at their native size; the host resizes them to the suite's
    image size and caches the result, keyed by ``name`` and ``version``.
    """

    name: str
    num_classes: int
    load: Callable[[DataContext], DomainData]
    version: int = 1
    description: str = ""


@dataclass(frozen=True)
class Budget:
    """A named training length; part of every run's identity."""

    teacher_steps: int
    student_steps: int
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 5e-4

    def __post_init__(self) -> None:
        for name in ("teacher_steps", "student_steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"budget {name} must be a positive integer, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"budget lr must be positive, got {self.lr}")


@dataclass(frozen=True)
class Augmentation:
    """Random per-image transforms applied to source batches while the teacher trains.

    Geometric: rotation, scale and translation (a fraction of the image size). Photometric,
    on the network's [-1, 1] inputs: a per-channel gain and bias, and a sign flip (dark-on-
    light becomes light-on-dark) with ``invert_probability``. Students are trained without
    augmentation so the frozen teacher's outputs can be computed once per image.
    """

    rotation_degrees: float = 0.0
    scale: tuple[float, float] = (1.0, 1.0)
    translate: float = 0.0
    gain: tuple[float, float] = (1.0, 1.0)
    bias: float = 0.0
    invert_probability: float = 0.0


@dataclass(frozen=True)
class Task:
    """One ordered domain pair of a suite."""

    name: str
    source: str
    target: str


@dataclass(frozen=True)
class Suite:
    """A named set of domains and the ordered pairs that form its leaderboard.

    Leave ``tasks`` empty to use every ordered pair of ``domains``; task names are
    ``<suite>.<source>_to_<target>`` with the domains' own ``<suite>.`` prefix dropped.
    """

    name: str
    domains: tuple[str, ...]
    num_classes: int
    image_size: int
    budgets: Mapping[str, Budget]
    default_teacher: str
    default_student: str
    default_recipes: tuple[str, ...] = ("source_only", "kd", "target_oracle")
    default_seeds: tuple[int, ...] = (0, 1)
    default_budget: str = "quick"
    pairs: tuple[tuple[str, str], ...] = ()
    teacher_augmentation: Augmentation | None = None
    description: str = ""
    tasks: tuple[Task, ...] = field(init=False)

    def __post_init__(self) -> None:
        pairs = self.pairs or tuple(itertools.permutations(self.domains, 2))
        tasks = tuple(
            Task(f"{self.name}.{self._short(s)}_to_{self._short(t)}", s, t) for s, t in pairs
        )
        object.__setattr__(self, "tasks", tasks)

    def _short(self, domain: str) -> str:
        prefix = f"{self.name}."
        return domain[len(prefix):] if domain.startswith(prefix) else domain


# --------------------------------------------------------------------------- training step


@dataclass(frozen=True)
class Outputs:
    """What a network says about a batch: logits and the pooled pre-logit features."""

    logits: torch.Tensor
    features: torch.Tensor


@dataclass(frozen=True)
class Batch:
    """Images and, where the label regime allows, their labels (``y`` is None otherwise)."""

    x: torch.Tensor
    y: torch.Tensor | None


class Step:
    """One optimisation step as the method components see it.

    Network outputs are computed on first request and shared by every component of the
    recipe, so a recipe of three components still runs each forward pass once.
    """

    def __init__(
        self,
        source: Batch,
        target: Batch,
        progress: float,
        student_forward: Callable[[torch.Tensor], Outputs],
        teacher_outputs: Callable[[DomainRole], Outputs] | None,
    ) -> None:
        self.source = source
        self.target = target
        self.progress = progress
        self._student_forward = student_forward
        self._teacher_outputs = teacher_outputs
        self._outputs: dict[tuple[str, str], Outputs] = {}

    def batch(self, domain: DomainRole) -> Batch:
        if domain == "source":
            return self.source
        if domain == "target":
            return self.target
        raise ValueError(f"domain must be 'source' or 'target', got {domain!r}")

    def student(self, domain: DomainRole) -> Outputs:
        """The student's outputs on this step's ``domain`` batch (with gradients)."""
        key = ("student", domain)
        if key not in self._outputs:
            self._outputs[key] = self._student_forward(self.batch(domain).x)
        return self._outputs[key]

    def teacher(self, domain: DomainRole) -> Outputs:
        """The frozen teacher's outputs on this step's ``domain`` batch (no gradients)."""
        if self._teacher_outputs is None:
            raise RuntimeError("this recipe has no teacher: set needs_teacher = True on the method")
        key = ("teacher", domain)
        if key not in self._outputs:
            with torch.no_grad():
                self._outputs[key] = self._teacher_outputs(domain)
        return self._outputs[key]


@dataclass(frozen=True)
class MethodInfo:
    """What a method component may need to know when it builds its own modules."""

    num_classes: int
    student_features: int
    teacher_features: int | None
    total_steps: int


class Method(nn.Module):
    """A recipe component: declares its hyper-parameters and adds loss terms to each step.

    Subclasses set the class attributes below, nest a frozen ``Hparams`` dataclass whose
    fields carry defaults and ``metadata={"search": (low, high[, "log"])}``, and implement
    ``loss``. Modules built in ``__init__`` (discriminators, projectors) are trained with
    the student. Supervised cross-entropy on labelled source data is the engine's job.
    """

    name: ClassVar[str]
    version: ClassVar[int] = 1
    family: ClassVar[str] = "baseline"
    needs_teacher: ClassVar[bool] = False
    uses_target: ClassVar[bool] = False
    uses_target_labels: ClassVar[bool] = False
    """True only for the labelled-target upper bound: its rows are flagged as reading target labels."""
    reference: ClassVar[bool] = False
    """Reference rows (source-only, target-labelled upper bound) join every grid unasked."""

    @dataclass(frozen=True)
    class Hparams:
        pass

    def __init__(self, hparams: Any, info: MethodInfo) -> None:
        super().__init__()
        self.hparams = hparams
        self.info = info

    def loss(self, step: Step) -> dict[str, torch.Tensor]:
        """Named loss terms for this step; the engine sums them with every other component's."""
        raise NotImplementedError

    @classmethod
    def describe(cls) -> str:
        doc = (cls.__doc__ or "").strip().splitlines()
        return doc[0] if doc else ""


# --------------------------------------------------------------------------- grid plumbing


@dataclass(frozen=True)
class Selector:
    """A model-selection rule: picks one of a run's evaluated checkpoints.

    ``choose`` gets the metrics of each evaluated checkpoint in training order and
    returns the index of the chosen one. ``oracle`` rules read target test labels and are
    flagged wherever their numbers appear.
    """

    name: str
    choose: Callable[[list[Mapping[str, float]]], int]
    oracle: bool = False
    description: str = ""


RunJob = Callable[[], Mapping[str, Any]]


class Executor:
    """Runs a list of independent jobs and reports each result as soon as it is known.

    Every job is a zero-argument callable that never raises (failures come back as
    results); ``on_result(index, result)`` must be called exactly once per job.
    """

    name: ClassVar[str]

    def run(self, jobs: list[RunJob], on_result: Callable[[int, Mapping[str, Any]], None]) -> None:
        raise NotImplementedError
