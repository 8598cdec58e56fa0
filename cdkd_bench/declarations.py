"""The torch-free half of the public contracts: what suites, domains, budgets, selection rules,
executors and jobs are. Commands that only read these (listing suites, rendering leaderboards)
import this module and never pay for torch; ``cdkd_bench.api`` re-exports every name.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from cdkd_bench.api import DomainData

FAMILIES = ("baseline", "distillation", "adaptation")
HEADLINES = {"acc": "top-1 accuracy", "balanced_acc": "per-class mean accuracy"}


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class DataContext:
    """Where a domain may read files from (``data_root``) and keep its own cache."""

    data_root: Path | None
    cache_dir: Path


@dataclass(frozen=True)
class ImageFiles:
    """One split of a domain stored as image files (JPEG, PNG, …): their paths and labels, in a fixed order."""

    paths: tuple[Path, ...]
    labels: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.paths) != len(self.labels):
            raise ValueError(f"{len(self.paths)} image paths but {len(self.labels)} labels")


@dataclass(frozen=True)
class DomainFiles:
    """What a file-backed domain found under the data root.

    ``sources`` are every file its images come from: the decoded cache is keyed on their
    paths, sizes and modification times, so a changed, added or removed file rebuilds it.
    ``train`` and ``test`` list the images of each split for image-file layouts (folders,
    image lists); the host decodes them one at a time into the cache. Leave them None for
    array formats (IDX, LIBSVM, ``.mat``) that the domain's ``load`` decodes itself.
    """

    sources: tuple[Path, ...]
    train: ImageFiles | None = None
    test: ImageFiles | None = None


@dataclass(frozen=True)
class Domain:
    """A labelled image dataset with train and test splits.

    ``load`` returns the images at their native size; the host resizes them to the suite's
    image size and caches the result, keyed by ``name`` and ``version``. A domain read from
    files under the data root also has ``locate``; when it lists image files, ``load`` may
    be None (the host decodes them).
    """

    name: str
    num_classes: int
    load: Callable[[DataContext], DomainData] | None
    version: int = 1
    description: str = ""
    packages: tuple[str, ...] = ()
    """Distributions whose installed version can change the images (a font renderer, a bundled photo):
    they are recorded with the data and its content hash, and a new version rebuilds the cached images."""
    locate: Callable[[DataContext], DomainFiles] | None = None
    """Finds the domain's files under ``context.data_root``; raises ``UserError`` naming the files and layout
    it expects, and where the dataset is published, when they are missing or laid out otherwise."""
    expected_images: int | None = None
    """How many images (train and test together) the published dataset has, for ``cdkd-bench data list``."""
    checksums: Mapping[str, str] = field(default_factory=dict)
    """MD5 of each published file, by its path relative to the data root (verified by ``data check`` / ``prepare``)."""
    download: Callable[[DataContext], None] | None = None
    """Fetches the published files into the data root, verifying their checksums; None where no public URL exists."""
    homepage: str = ""
    """Where the dataset is published (named in the error for missing files)."""

    def __post_init__(self) -> None:
        if self.load is None and self.locate is None:
            raise ValueError(f"domain {self.name!r} needs `load` or `locate`")


@dataclass(frozen=True)
class Budget:
    """A named training length; part of every run's identity."""

    teacher_steps: int
    student_steps: int
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 5e-4
    eval_points: int = 1
    """Evenly spaced checkpoints at which a student is evaluated (the last is the end of training)."""
    backbone_lr_mult: float = 1.0
    """The student's body learns at ``lr`` times this, its classifier at ``lr`` (0.1 is usual for pretrained students)."""

    def __post_init__(self) -> None:
        for name in ("teacher_steps", "student_steps", "batch_size", "eval_points"):
            if getattr(self, name) < 1:
                raise ValueError(f"budget {name} must be a positive integer, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"budget lr must be positive, got {self.lr}")
        if self.backbone_lr_mult <= 0:
            raise ValueError(f"budget backbone_lr_mult must be positive, got {self.backbone_lr_mult}")


@dataclass(frozen=True)
class Augmentation:
    """Random per-image transforms applied to source batches: the teacher's and, under augmentation
    parity (the default), every student's.

    Geometric: rotation, scale and translation (a fraction of the image size). Photometric,
    on the network's [-1, 1] inputs: a per-channel gain and bias, and a sign flip (dark-on-
    light becomes light-on-dark) with ``invert_probability``.
    """

    rotation_degrees: float = 0.0
    scale: tuple[float, float] = (1.0, 1.0)
    translate: float = 0.0
    gain: tuple[float, float] = (1.0, 1.0)
    bias: float = 0.0
    invert_probability: float = 0.0
    crop_area: tuple[float, float] | None = None
    """A random resized crop first (the Office / ImageNet recipe): a box covering this fraction of the stored
    image's area, with aspect ratio in ``crop_ratio``, resized to the suite's ``crop_size``. None: no crop."""
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip_probability: float = 0.0
    """Mirror left-right with this probability (natural images; never digits)."""

    def to_dict(self) -> dict[str, Any]:
        """The policy as specs record it: the fields added after the first release are left out at their
        defaults, so the specs (and run ids) of policies that do not use them are what they always were."""
        data = dataclasses.asdict(self)
        for name, default in _LATER_AUGMENTATION_FIELDS.items():
            if data[name] == default:
                data.pop(name)
        return data


_LATER_AUGMENTATION_FIELDS: dict[str, Any] = {"crop_area": None, "crop_ratio": (3 / 4, 4 / 3), "hflip_probability": 0.0}


@dataclass(frozen=True)
class Task:
    """One ordered domain pair of a suite."""

    name: str
    source: str
    target: str


@dataclass(frozen=True)
class PublishedResult:
    """A number from the literature for one of a suite's tasks, shown beside ours on its leaderboard page."""

    task: str
    """The suite's short task name (``amazon_to_webcam``)."""
    recipe: str
    """The recipe it corresponds to (``source_only``, ``dann``, …)."""
    accuracy: float
    source: str
    """Where it was published: the paper or repository and file."""
    protocol: str = ""
    """How it differs from ours: architecture, schedule, and above all the selection rule (``oracle`` when
    checkpoints were picked on the target test set)."""


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
    default_recipes: tuple[str, ...] = ()
    """Recipes a grid runs when none are named (the reference recipes join every grid anyway)."""
    default_seeds: tuple[int, ...] = (0, 1)
    default_budget: str = "quick"
    converged_budget: str | None = None
    """The budget the suite's published tables use: one at which the baselines no longer gain when it
    doubles. Tables at any other budget are captioned as demonstrations."""
    pairs: tuple[tuple[str, str], ...] = ()
    default_tasks: tuple[str, ...] = ()
    """Tasks a grid runs when none are named (short or full names; empty: every task): the suite's table."""
    teacher_augmentation: Augmentation | None = None
    """The suite's augmentation policy for source batches: the teacher's, and every student's under augmentation parity."""
    transductive_targets: tuple[str, ...] = ()
    """Domains evaluated by the transductive protocol when they are the target: every image of the domain is
    unlabelled training data and test data (the Office protocol), for domains too small to hold out enough
    test images. A recipe that reads target labels (the oracle) trains on the train split and is scored on
    the test split instead."""
    views: Mapping[str, Augmentation] = field(default_factory=dict)
    """Named augmentations components may read (``Method.views``), e.g. ``weak`` and ``strong``."""
    crop_size: int | None = None
    """The size networks see when it is smaller than the stored ``image_size`` (224 from 256 for the Office
    suites): augmented batches are random resized crops, plain ones (and evaluation) the centre crop."""
    headline: str = "acc"
    """The metric of the suite's tables: ``acc`` (top-1 accuracy) or ``balanced_acc`` (the mean of the per-class
    accuracies, VisDA-2017's headline number)."""
    published: tuple[PublishedResult, ...] = ()
    """Numbers from the literature for the suite's tasks, with their source and protocol."""
    pretrained: bool = False
    """Teachers and students start from their architectures' published (ImageNet) weights, or the files
    given with ``--teacher-weights`` / ``--student-weights``; inputs are then normalised as those weights expect."""
    default: bool = False
    """The suite commands use when none is named (exactly one installed suite should say so)."""
    description: str = ""
    tasks: tuple[Task, ...] = field(init=False)

    def __post_init__(self) -> None:
        if self.headline not in HEADLINES:
            raise ValueError(f"suite {self.name!r}: headline must be one of {', '.join(HEADLINES)}, got {self.headline!r}")
        pairs = self.pairs or tuple(itertools.permutations(self.domains, 2))
        tasks = tuple(
            Task(f"{self.name}.{self._short(s)}_to_{self._short(t)}", s, t) for s, t in pairs
        )
        object.__setattr__(self, "tasks", tasks)

    @property
    def input_size(self) -> int:
        """The height and width of the images the networks see."""
        return self.crop_size or self.image_size

    def _short(self, domain: str) -> str:
        prefix = f"{self.name}."
        return domain[len(prefix):] if domain.startswith(prefix) else domain



# --------------------------------------------------------------------------- grid plumbing


@dataclass(frozen=True)
class Selector:
    """A model-selection rule: picks one of a run's evaluated checkpoints.

    ``choose`` gets the metrics of each evaluated checkpoint in training order and
    returns the index of the chosen one. ``oracle`` rules read target test labels and are
    flagged wherever their numbers appear. ``needs`` names the checkpoint metrics ``choose``
    reads, so that runs which did not record them are refused rather than misselected.
    """

    name: str
    choose: Callable[[list[Mapping[str, float]]], int]
    oracle: bool = False
    description: str = ""
    default: bool = False
    """The rule tables use when none is named (exactly one installed rule should say so)."""
    needs: tuple[str, ...] = ()
    """The checkpoint metric keys ``choose`` reads (``"source_val.acc"``, ``"target_train.snd"``, …). A table
    under the rule is refused, in one sentence, when a finished run's checkpoints lack one of them (runs trained
    before cdkd-bench recorded that metric); leave it empty for a rule that reads no metric, like ``last``."""
    score: Callable[[Mapping[str, Any]], float] | None = None
    """A checkpoint's score, higher is better (the value ``choose`` maximises): how an hparam search compares the
    configurations it tried, each at its chosen checkpoint. None for a rule that scores nothing (``last``), which
    cannot choose between configurations."""


@dataclass(frozen=True)
class Job:
    """One unit of grid work as plain, picklable data: a teacher to prepare or a student run.

    ``kind`` is ``"teacher"`` (``spec`` a TeacherSpec; ``wait`` False returns at once when
    another process is training it) or ``"run"`` (``spec`` a RunSpec). ``settings`` are the
    engine settings. Any process runs it with ``cdkd_bench.run_job(job)``, which builds the
    plugin host from the installed entry points once per process. ``after`` lists the
    positions (in the same job list) of jobs whose results must be reported before this
    one starts: a run names its teacher's job. The grid lists those jobs first, so an
    executor that runs jobs strictly in order honours it too.
    """

    kind: str
    spec: Any
    settings: Any
    wait: bool = True
    after: tuple[int, ...] = ()


RunJob = Job
Ready = Callable[[int], Mapping[str, Any] | None]


class Executor:
    """Runs a list of independent jobs and reports each result as soon as it is known.

    Start a job only after every job in its ``after`` has reported (running the list in
    order does that). For each job, call ``ready(index)`` in the calling process just before starting it: if it
    returns a result (the run is claimed by another process, say), report that instead of
    running the job. Run a job with ``cdkd_bench.run_job(job)``, in this process or another;
    it never raises (failures come back as results). ``on_result(index, result)`` must be
    called exactly once per job, in the calling process.
    """

    name: ClassVar[str]
    default: ClassVar[bool] = False
    """The executor grids use when none is named (exactly one installed executor should say so)."""

    def check(self) -> None:
        """Called before a grid starts: raise ``UserError`` (one sentence) for a setup that cannot work
        (a package missing, a cluster that does not answer), so the user hears it before anything runs."""

    def run(self, jobs: list[Job], on_result: Callable[[int, Mapping[str, Any]], None], ready: Ready | None = None) -> None:
        raise NotImplementedError
