"""The public contracts between the host and its plugins.

The torch-free declarations live in :mod:`cdkd_bench.declarations`; this module re-exports
them beside the tensor-bound ones, so plugins may import every name from here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from cdkd_bench.declarations import (
    FAMILIES,
    Augmentation,
    Budget,
    DataContext,
    Domain,
    DomainFiles,
    Executor,
    ImageFiles,
    Job,
    PublishedResult,
    Ready,
    RunJob,
    Selector,
    Suite,
    Task,
)
from cdkd_bench.images import Images

__all__ = [
    "FAMILIES",
    "PLAIN",
    "Augmentation",
    "Batch",
    "Budget",
    "DataContext",
    "Domain",
    "DomainFiles",
    "DomainData",
    "DomainRole",
    "Executor",
    "ImageFiles",
    "PublishedResult",
    "Job",
    "Method",
    "MethodInfo",
    "NetworkInfo",
    "Outputs",
    "Ready",
    "RunJob",
    "Selector",
    "StageInfo",
    "Step",
    "StepControl",
    "Suite",
    "Task",
    "TeacherForward",
    "ViewMaker",
]

DomainRole = Literal["source", "target"]


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class DomainData:
    """One domain's images as uint8 ``(N, C, H, W)`` tensors with int64 labels.

    ``train_groups`` (int64, one per train image, optional) says which train images are
    variants of one underlying item (the same scanned digit on several textures, the same
    font's glyph of a digit): the source-validation split keeps every group whole, so
    validation never scores a variant of an image the model trained on.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    train_groups: torch.Tensor | None = None



# --------------------------------------------------------------------------- training step


PLAIN = "plain"
"""The view name of the unaugmented batch."""


@dataclass(frozen=True)
class Outputs:
    """What a network says about a batch.

    ``logits`` and ``features`` (pooled pre-logits) always; ``intermediates`` maps timm
    stage indices (non-negative, as in ``feature_info``) to NCHW feature maps, filled only
    with the stages some component of the recipe asked for (see ``Method.intermediates``).
    """

    logits: torch.Tensor
    features: torch.Tensor
    intermediates: Mapping[int, torch.Tensor] = field(default_factory=dict)
    num_stages: int = 0

    def stage(self, index: int) -> torch.Tensor:
        """The feature map of stage ``index``; negative counts from the last stage (-1 = last)."""
        key = index + self.num_stages if index < 0 else index
        if key not in self.intermediates:
            raise KeyError(f"stage {index} was not computed: declare it in the component's `intermediates`")
        return self.intermediates[key]


@dataclass(frozen=True)
class Batch:
    """Images and, where the label regime allows, their labels (``y`` is None otherwise).

    ``index`` is each image's position in its split (for memory banks and pseudo-label
    tables); ``None`` only for batches not drawn from a split.
    """

    x: torch.Tensor
    y: torch.Tensor | None
    index: torch.Tensor | None = None


ViewMaker = Callable[[DomainRole, str, Batch], Batch]
TeacherForward = Callable[[DomainRole, str, Batch], Outputs]


class Step:
    """One optimisation step as the method components see it.

    Network outputs are computed on first request and shared by every component of the
    recipe, so a recipe of three components still runs each forward pass once. A *view* is
    a named augmentation of a domain's batch (``"weak"``, ``"strong"``; ``"plain"`` is the
    batch itself), made on first request, batched on the device, with the same images,
    labels and indices in the same order.
    """

    def __init__(
        self,
        source: Batch,
        target: Batch,
        progress: float,
        student_forward: Callable[[torch.Tensor], Outputs],
        teacher_forward: TeacherForward | None = None,
        view_maker: ViewMaker | None = None,
        labelled_target: Batch | None = None,
    ) -> None:
        self.source = source
        self.target = target
        self.labelled_target = labelled_target
        """Under a label regime that reveals target labels (``ssda-K``, ``sup``): a batch of the labelled
        target train images, with labels (``index``: positions in that labelled subset); None under ``uda``. The
        engine trains on it with cross-entropy."""
        self.progress = progress
        self._student_forward = student_forward
        self._teacher_forward = teacher_forward
        self._view_maker = view_maker
        self._views: dict[tuple[str, str], Batch] = {}
        self._outputs: dict[tuple[str, str, str], Outputs] = {}

    def batch(self, domain: DomainRole, view: str = PLAIN) -> Batch:
        """This step's ``domain`` batch, or its ``view``."""
        if domain == "source":
            plain = self.source
        elif domain == "target":
            plain = self.target
        else:
            raise ValueError(f"domain must be 'source' or 'target', got {domain!r}")
        if view == PLAIN:
            return plain
        if (domain, view) not in self._views:
            if self._view_maker is None:
                raise RuntimeError(f"view {view!r} of {domain} was not declared by any component (see Method.views)")
            self._views[domain, view] = self._view_maker(domain, view, plain)
        return self._views[domain, view]

    def student(self, domain: DomainRole, view: str = PLAIN) -> Outputs:
        """The student's outputs on this step's ``domain`` batch or its ``view`` (with gradients)."""
        key = ("student", domain, view)
        if key not in self._outputs:
            self._outputs[key] = self._student_forward(self.batch(domain, view).x)
        return self._outputs[key]

    def teacher(self, domain: DomainRole, view: str = PLAIN) -> Outputs:
        """The frozen teacher's outputs on this step's ``domain`` batch or its ``view`` (no gradients)."""
        if self._teacher_forward is None:
            raise RuntimeError("this recipe has no teacher: set needs_teacher = True on the method")
        key = ("teacher", domain, view)
        if key not in self._outputs:
            with torch.no_grad():
                self._outputs[key] = self._teacher_forward(domain, view, self.batch(domain, view))
        return self._outputs[key]

    def labelled_target_ce(self) -> torch.Tensor | None:
        """The engine's cross-entropy on the labelled target batch (None when the regime reveals no target labels)."""
        batch = self.labelled_target
        if batch is None or batch.y is None:
            return None
        key = ("student", "labelled_target", PLAIN)
        if key not in self._outputs:
            self._outputs[key] = self._student_forward(batch.x)
        return F.cross_entropy(self._outputs[key].logits, batch.y)

    def forget_outputs(self) -> None:
        """Drop every computed output (after an update inside an owned step, so they are recomputed)."""
        self._outputs.clear()


@dataclass(frozen=True)
class StageInfo:
    """One stage of a network, from timm's ``feature_info``."""

    channels: int
    reduction: int
    module: str


@dataclass(frozen=True)
class NetworkInfo:
    """The shape of a network, for components that build projectors or regressors."""

    arch: str
    num_features: int
    stages: tuple[StageInfo, ...]

    def stage(self, index: int) -> StageInfo:
        """Stage ``index``; negative counts from the last stage."""
        return self.stages[index]

    def stage_index(self, index: int) -> int:
        """``index`` made non-negative (the key of ``Outputs.intermediates``)."""
        return index + len(self.stages) if index < 0 else index


@dataclass(frozen=True)
class MethodInfo:
    """What a method component may need to know when it builds its own modules.

    The first four fields are the v1 contract; ``student`` and ``teacher`` describe both
    networks' stages (channels, reduction) and pooled feature size, ``split_sizes`` the
    number of images in each training split (``{"source": n, "target": m}``, for memory
    banks), ``image_size`` the input size.
    """

    num_classes: int
    student_features: int
    teacher_features: int | None
    total_steps: int
    student: NetworkInfo | None = None
    teacher: NetworkInfo | None = None
    split_sizes: Mapping[str, int] = field(default_factory=dict)
    image_size: int = 0


class StepControl:
    """What a component that owns the step (``Method.owns_step``) drives the update with.

    The engine implements it. A typical owner computes a loss from ``step`` (plus
    ``source_ce()`` and ``others()`` so the recipe's other components still count), calls
    ``backward``, then ``update`` on a parameter set, and ``recompute`` before the next phase.
    """

    step: Step
    student: nn.Module

    def source_ce(self) -> torch.Tensor:
        """The engine's cross-entropy on the labelled source batch (the baseline term), plus that of the labelled
        target batch under a label regime that reveals target labels (``ssda-K``, ``sup``)."""
        raise NotImplementedError

    def others(self) -> dict[str, torch.Tensor]:
        """The loss terms of every other component of the recipe, on the current outputs."""
        raise NotImplementedError

    def backward(self, loss: torch.Tensor) -> None:
        """Accumulate gradients of ``loss`` (checked for NaN/inf like every step's loss)."""
        raise NotImplementedError

    def update(self, parameters: Iterable[nn.Parameter] | None = None) -> None:
        """One optimiser step on ``parameters`` only (None: every trainable parameter), then clear gradients."""
        raise NotImplementedError

    def recompute(self) -> None:
        """Forget this step's outputs so the next request runs the networks with the updated weights."""
        raise NotImplementedError


class Method(nn.Module):
    """A recipe component: declares its hyper-parameters and adds loss terms to each step.

    Subclasses set the class attributes below, nest a frozen ``Hparams`` dataclass whose
    fields carry defaults and ``metadata={"search": (low, high[, "log"])}``, and implement
    ``loss``. Modules built in ``__init__`` (discriminators, projectors) are trained with
    the student. Supervised cross-entropy on labelled source data is the engine's job.

    Contract v2 adds, all optional (a v1 component that only defines ``loss`` works as is):
    ``intermediates`` (stage indices whose feature maps it reads), ``views`` (augmented
    views it reads), ``param_groups`` (its own learning-rate multiplier and weight decay),
    ``owns_step`` + ``update`` (drive the optimiser itself), ``before_evaluation``.
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
    intermediates: tuple[int, ...] = ()
    """timm stage indices (negative: from the last) whose feature maps ``Outputs.intermediates`` must hold,
    for the student and the teacher. A class attribute, or set in ``__init__`` from the hparams."""
    views: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    """Augmented views read per domain, e.g. ``{"target": ("weak", "strong")}``; the suite defines them."""
    owns_step: ClassVar[bool] = False
    """True if ``update`` drives the optimiser itself (at most one per recipe); ``loss`` is then not called."""

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

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimiser groups for this component's own parameters.

        Each group is ``{"params": [...], "lr_mult": float, "weight_decay": float}`` (the
        last two optional: the budget's learning rate times 1 and its weight decay).
        """
        params = [p for p in self.parameters() if p.requires_grad]
        return [{"params": params}] if params else []

    def update(self, control: StepControl) -> dict[str, torch.Tensor]:
        """For ``owns_step`` components: perform the whole update of one step; return terms to log."""
        raise NotImplementedError

    def before_evaluation(self, student: nn.Module, target_unlabelled: torch.Tensor | Images) -> None:
        """Adjust a copy of the student before it is evaluated (AdaBN re-estimates BatchNorm here).

        ``target_unlabelled`` holds every unlabelled target image the run may read: index it with
        an index tensor or a slice for a float batch on the device (``len`` counts them); large
        domains convert batch by batch, so never ask for all of them at once.
        """

    @classmethod
    def describe(cls) -> str:
        doc = (cls.__doc__ or "").strip().splitlines()
        return doc[0] if doc else ""
