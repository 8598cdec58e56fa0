"""Starting points for contributors: ready-to-install plugin packages for a new method or a new suite.

``write_method_package("nst", Path("."))`` writes ``./cdkd-nst/``, a setuptools package
whose module ``cdkd_nst`` registers a working placeholder component named ``nst``
through the ``cdkd_bench`` entry-point group, with a test that runs the conformance kit
and a README saying how to install, test and run it. ``write_suite_package`` does the
same for a suite of two generated domains. ``cdkd-bench new method NAME`` and
``cdkd-bench new suite NAME`` call these; docs/writing-a-method.md walks through the rest.

Torch-free until a name is checked against the installed methods (that loads every plugin).
"""

from __future__ import annotations

import keyword
import re
from importlib.metadata import entry_points
from pathlib import Path

from cdkd_bench.errors import UserError

__all__ = ["write_method_package", "write_suite_package"]

# The method's name becomes a Python identifier (module cdkd_<name>), an entry-point name, a
# recipe name and part of file names: lowercase letters, digits and underscores only.
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]*")
MAX_NAME_LENGTH = 50
ENTRY_POINT_GROUP = "cdkd_bench"
_TOKEN = re.compile(r"@(name|Class|module|dist)@")
# Names the generated method module already binds: a class named like one of them would shadow it.
_TAKEN_CLASS_NAMES = frozenset({"F", "DOMAINS", "Method", "MethodInfo", "RegisterMethods", "Step", "DomainRole", "TYPE_CHECKING"})


def write_method_package(name: str, directory: Path) -> Path:
    """Write ``directory/cdkd-<name>/``, a plugin package with a placeholder method called ``name``; returns that folder.

    Raises ``UserError`` for a name that is not lowercase letters, digits and underscores
    starting with a letter, for the name of an installed method or plugin, and for a
    target folder that already exists.
    """
    _check_name(name, "method")
    from cdkd_bench.plugins import load_host  # imports every plugin (and torch): only once the name is well formed

    methods = load_host().methods
    if name in methods:
        raise UserError(f"a method called {name!r} is already installed (from plugin {methods.entry(name).plugin!r}); "
                        "choose another name")
    _check_entry_point_free(name, "method")
    files = {
        "pyproject.toml": _PYPROJECT.replace("@description@", f"The {name} method component for cdkd-bench."),
        "@module@/__init__.py": _METHOD_MODULE,
        "tests/test_@name@.py": _METHOD_TEST,
        "README.md": _METHOD_README,
    }
    return _write_package(name, Path(directory), files)


def write_suite_package(name: str, directory: Path) -> Path:
    """Write ``directory/cdkd-<name>/``, a plugin package with a suite called ``name`` of two generated domains; returns that folder.

    Raises ``UserError`` for a malformed name, the name of an installed suite or plugin, a
    name whose domains (``<name>.clean``, ``<name>.noisy``) are installed, and for a target
    folder that already exists.
    """
    _check_name(name, "suite")
    from cdkd_bench.plugins import load_host

    host = load_host(families=("suite", "domain"))
    if name in host.suites:
        raise UserError(f"a suite called {name!r} is already installed (from plugin {host.suites.entry(name).plugin!r}); "
                        "choose another name")
    taken = [d for d in (f"{name}.clean", f"{name}.noisy") if d in host.domains]
    if taken:
        raise UserError(f"domain {taken[0]!r} is already installed (from plugin {host.domains.entry(taken[0]).plugin!r}); "
                        "choose another suite name")
    _check_entry_point_free(name, "suite")
    files = {
        "pyproject.toml": _PYPROJECT.replace("@description@", f"The {name} suite for cdkd-bench: two generated domains."),
        "@module@/__init__.py": _SUITE_MODULE,
        "tests/test_@name@.py": _SUITE_TEST,
        "README.md": _SUITE_README,
    }
    return _write_package(name, Path(directory), files)


# --------------------------------------------------------------------------- checks and writing


def _check_name(name: object, kind: str) -> None:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise UserError(f"{kind} name {name!r} must be lowercase letters, digits and underscores, starting with a letter "
                        f"(e.g. my_{kind})")
    if len(name) > MAX_NAME_LENGTH:
        raise UserError(f"{kind} name {name!r} is {len(name)} characters long; use at most {MAX_NAME_LENGTH}")


def _check_entry_point_free(name: str, kind: str) -> None:
    """The package's entry point is called ``name``: two entry points of one name make the tool skip the second."""
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            owner = ep.dist.name if ep.dist else "an installed package"
            raise UserError(f"the plugin name {name!r} is already taken by {owner} (entry point {ep.value!r}); "
                            f"choose another {kind} name")


def _names(name: str) -> dict[str, str]:
    class_name = "".join(part.capitalize() for part in name.split("_"))
    if keyword.iskeyword(class_name) or class_name in _TAKEN_CLASS_NAMES:  # `none` would make `class None`
        class_name += "Component"
    return {
        "name": name,
        "Class": class_name,
        "module": f"cdkd_{name}",
        "dist": f"cdkd-{name.replace('_', '-')}",
    }


def _fill(template: str, names: dict[str, str]) -> str:
    return _TOKEN.sub(lambda m: names[m.group(1)], template)


def _write_package(name: str, directory: Path, files: dict[str, str]) -> Path:
    names = _names(name)
    root = directory / names["dist"]
    if root.exists() or root.is_symlink():
        raise UserError(f"{root} already exists; remove it or choose another folder with --dir")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        root.mkdir()
        for relative, template in files.items():
            path = root / _fill(relative, names)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(_fill(template, names), encoding="utf-8")
    except FileExistsError:
        raise UserError(f"{root} already exists; remove it or choose another folder with --dir") from None
    except OSError as exc:
        raise UserError(f"cannot write the package under {directory}: {exc.strerror or exc}") from None
    return root


# --------------------------------------------------------------------------- templates
# Tokens: @name@ (the method or suite), @Class@ (its class name), @module@ (cdkd_<name>),
# @dist@ (the distribution, cdkd-<name> with hyphens).

_PYPROJECT = '''\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "@dist@"
version = "0.1.0"
description = "@description@"
readme = "README.md"
requires-python = ">=3.11"
dependencies = ["cdkd-bench"]

[project.optional-dependencies]
test = ["pytest"]

# This is the whole plugin mechanism: cdkd-bench loads every module listed in this group.
[project.entry-points.cdkd_bench]
@name@ = "@module@"

[tool.setuptools]
packages = ["@module@"]

[tool.pytest.ini_options]
testpaths = ["tests"]
'''

_METHOD_MODULE = '''\
"""CHANGE ME: Authors Year, "The paper's title". https://arxiv.org/abs/XXXX.XXXXX

The first paragraph of this docstring names the method's paper: `cdkd-bench list methods
--markdown` prints it in its "paper" column. Replace it, then write here the paper's formula
(with its equation number) and exactly what this component computes, and say where it
follows the paper and where it does not and why: reductions (a sum or a mean, over what),
constants kept or dropped, how student and teacher shapes that differ are handled, default
values and where they come from. Reviewers read this text beside the code and the test of
the formula (docs/writing-a-method.md).

As generated, the component is a working placeholder, Hinton et al.'s KD, per domain batch::

    loss = weight * T^2 * KL(softmax(teacher_logits / T) || softmax(student_logits / T))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from cdkd_bench import Method, MethodInfo, RegisterMethods, Step, hookimpl

if TYPE_CHECKING:
    from cdkd_bench.api import DomainRole

# Which batches the term is computed on. Under the `uda` regime target batches carry no labels:
# distilling on them is how the student learns the target domain from the teacher.
DOMAINS: dict[str, tuple[DomainRole, ...]] = {"both": ("source", "target"), "source": ("source",), "target": ("target",)}


def paper_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """CHANGE ME: the paper's formula on plain tensors, so that a test can check it against numbers worked out by hand.

    Placeholder: T^2 * KL(p_teacher || p_student), p = softmax(logits / T), averaged over the batch.
    """
    student_log_p = F.log_softmax(student_logits.float() / temperature, dim=1)
    teacher_log_p = F.log_softmax(teacher_logits.float() / temperature, dim=1)
    # kl_div(input, target) is KL(target || input): the student's log-probabilities go first.
    return F.kl_div(student_log_p, teacher_log_p, log_target=True, reduction="batchmean") * temperature**2


class @Class@(Method):
    """CHANGE ME: one line on what the method does (shown by `cdkd-bench list methods`)."""

    name = "@name@"           # how recipes call it: --recipes @name@,kd+@name@ and --set @name@.weight=2
    version = 1               # bump on any change of behaviour: it is stored with every result
    family = "distillation"   # baseline | distillation | adaptation
    needs_teacher = True      # step.teacher(...) gives the frozen teacher's outputs
    uses_target = True        # reads unlabelled target batches: step.student("target"), step.teacher("target")
    # Contract v2, all optional (docs/plugins.md):
    # intermediates = (-2,)                    # stage maps: step.student(d).stage(-2), NCHW, any widths
    # views = {"target": ("weak", "strong")}   # augmented views: step.student("target", "strong")

    @dataclass(frozen=True)
    class Hparams:
        # CHANGE ME: your hyper-parameters. Each needs a default and a search space: (low, high),
        # (low, high, "log") or a tuple of choices, holding the default. Give the search space the
        # range the paper and its re-implementations use, no wider and no narrower than the built-in
        # methods get: comparisons in this benchmark are made at equal search effort.
        weight: float = field(default=1.0, metadata={"search": (0.1, 10.0, "log")})
        temperature: float = field(default=4.0, metadata={"search": (1.0, 8.0)})
        domains: str = field(default="both", metadata={"search": tuple(DOMAINS)})

        def __post_init__(self) -> None:
            # A ValueError raised here is shown to the user as one sentence (`--set @name@.weight=-1`).
            if not self.weight >= 0:
                raise ValueError(f"weight must be zero or positive, got {self.weight}")
            if not self.temperature > 0:
                raise ValueError(f"temperature must be positive, got {self.temperature}")
            if self.domains not in DOMAINS:
                raise ValueError(f"domains must be one of {', '.join(DOMAINS)}, got {self.domains!r}")

    def __init__(self, hparams: Hparams, info: MethodInfo) -> None:
        super().__init__(hparams, info)
        # CHANGE ME if the method has modules of its own (a projector, a discriminator): build them
        # here, sized from info.student / info.teacher (stage(i).channels, num_features). They are
        # this nn.Module's children and train with the student; the teacher never does.

    def loss(self, step: Step) -> dict[str, torch.Tensor]:
        # CHANGE ME: return named loss terms. The engine adds its own cross-entropy on the labelled
        # source batch to every recipe: never add it here. Teacher outputs come without gradients.
        hp = self.hparams
        terms = {}
        for domain in DOMAINS[hp.domains]:
            student, teacher = step.student(domain).logits, step.teacher(domain).logits
            terms[f"@name@_{domain}"] = hp.weight * paper_loss(student, teacher, hp.temperature)
        return terms


@hookimpl
def cdkd_register_methods(register: RegisterMethods) -> None:
    register(@Class@)
'''

_METHOD_TEST = '''\
"""Tests of the @name@ component: the method contract, and the paper's formula against numbers computed independently."""

from __future__ import annotations

import math

import pytest
import torch
from @module@ import @Class@, paper_loss

from cdkd_bench.testing import check_method


def test_conforms_to_the_method_contract() -> None:
    # Builds the component on two small networks of different widths and spatial sizes, checks its
    # search spaces, computes a step at every end of every search space, checks that gradients reach
    # the student and never the teacher, and runs two steps of the engine's own training loop.
    check_method(@Class@)


def test_the_formula_by_hand() -> None:
    # CHANGE ME when you change paper_loss: fixed tensors, and the expected number worked out by hand
    # (or with plain loops or NumPy) from the paper's equation, never by calling the code under test.
    # Placeholder, at T = 1: teacher [0, 0] gives p = [1/2, 1/2], student [ln 3, 0] gives q = [3/4, 1/4];
    # KL(p || q) = 1/2 ln((1/2) / (3/4)) + 1/2 ln((1/2) / (1/4)) = 1/2 ln(4/3).
    student = torch.tensor([[math.log(3.0), 0.0]])
    teacher = torch.tensor([[0.0, 0.0]])
    assert paper_loss(student, teacher, 1.0).item() == pytest.approx(0.5 * math.log(4 / 3), rel=1e-6)
    # At T = 2 the student's logits become [ln sqrt(3), 0], so q = [sqrt(3), 1] / (sqrt(3) + 1), and the
    # KL is multiplied by T^2 = 4.
    q = (math.sqrt(3.0) / (math.sqrt(3.0) + 1.0), 1.0 / (math.sqrt(3.0) + 1.0))
    expected = 4 * sum(0.5 * math.log(0.5 / q_i) for q_i in q)
    assert paper_loss(student, teacher, 2.0).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("bad", [{"weight": -1.0}, {"temperature": 0.0}, {"domains": "all"}])
def test_rejects_invalid_hparams(bad: dict) -> None:
    with pytest.raises(ValueError):
        @Class@.Hparams(**bad)
'''

_METHOD_README = '''\
# @dist@

The `@name@` method component for cdkd-bench, as a plugin package.
As generated it is a placeholder (Hinton's KD under another name): change the loss in
`@module@/__init__.py` and its test in `tests/test_@name@.py`, where the comments marked
CHANGE ME say what to change. cdkd-bench's `docs/writing-a-method.md` walks from here to a
published leaderboard row.

## Install

Into the environment where cdkd-bench is installed, editable so that your changes count
without reinstalling:

```bash
pip install -e '.[test]'
cdkd-bench list methods --filter @name@     # shows `@name@` and the plugin version providing it
```

## Test

```bash
python -m pytest
```

`check_method` (from `cdkd_bench.testing`) checks the component against the method contract;
the formula test checks your loss against numbers worked out by hand.

## Run

```bash
# a smoke grid: does it run end to end? (a minute on a laptop; its numbers mean nothing)
cdkd-bench run --budget smoke --recipes @name@ --seeds 0 --tasks printed_to_handwritten --store smoke.sqlite --out-dir smoke
# the suite's table at its converged budget, beside the built-in methods
cdkd-bench run --budget long --recipes @name@,kd --seeds 0,1,2,3,4
cdkd-bench leaderboard
```

Hyper-parameters: `--set @name@.weight=2` (repeatable), or `[hparams.@name@]` in a grid file.
Bump `version` in the class whenever its behaviour changes: stored results keep the version
that produced them.
'''

_SUITE_MODULE = '''\
"""The @name@ suite: CHANGE ME to say what the suite is, where its data comes from, and its protocol.

As generated, two domains are drawn from a seeded random generator: four classes of shapes
(square, disc, bar, cross) in random positions and sizes, white on black in
`@name@.clean` and in random colours on noisy coloured backgrounds in `@name@.noisy`.
Replace them with your data: a domain's `load` returns uint8 (N, 3, H, W) tensors with int64
labels, or give `locate` for files under the data root (docs/plugins.md, docs/data.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cdkd_bench import Augmentation, Budget, DataContext, Domain, RegisterDomains, RegisterSuites, Suite, hookimpl

if TYPE_CHECKING:
    import torch

    from cdkd_bench import DomainData

CLASSES = ("square", "disc", "bar", "cross")
IMAGE_SIZE = 32
TRAIN_IMAGES, TEST_IMAGES = 600, 300
# Bump when the generator draws anything differently: cached images and results are keyed by it.
GENERATOR_VERSION = 1


def draw_shapes(count: int, seed: int, noisy: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` uint8 images (N, 3, 32, 32) of random shapes and their labels, the same for the same seed."""
    import torch  # here, not at the top: commands that only list suites never import torch

    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(len(CLASSES), (count,), generator=g)
    radius = torch.empty(count, 1, 1).uniform_(5.0, 9.0, generator=g)
    cy = torch.empty(count, 1, 1).uniform_(10.0, 22.0, generator=g)
    cx = torch.empty(count, 1, 1).uniform_(10.0, 22.0, generator=g)
    grid = torch.arange(IMAGE_SIZE, dtype=torch.float32)
    dy, dx = (grid.view(1, -1, 1) - cy).abs(), (grid.view(1, 1, -1) - cx).abs()
    thin = radius / 3
    masks = torch.stack([
        (dx <= radius) & (dy <= radius),                                  # square
        dx**2 + dy**2 <= radius**2,                                       # disc
        (dx <= radius) & (dy <= thin),                                    # bar
        ((dx <= radius) & (dy <= thin)) | ((dy <= radius) & (dx <= thin)),  # cross
    ])                                                                    # (classes, N, H, W)
    shape = masks[labels, torch.arange(count)].unsqueeze(1).float()      # (N, 1, H, W)
    if noisy:
        foreground = torch.rand(count, 3, 1, 1, generator=g) * 255
        background = torch.rand(count, 3, 1, 1, generator=g) * 255
        noise = torch.randn(count, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g) * 40
        images = shape * foreground + (1 - shape) * background + noise
    else:
        images = shape.expand(count, 3, IMAGE_SIZE, IMAGE_SIZE) * 255
    return images.clamp(0, 255).round().to(torch.uint8), labels.long()


def _loader(noisy: bool, seed: int):  # type: ignore[no-untyped-def]
    def load(context: DataContext) -> DomainData:  # noqa: ARG001 - generated: nothing to read
        from cdkd_bench import DomainData

        train_x, train_y = draw_shapes(TRAIN_IMAGES, seed, noisy)
        test_x, test_y = draw_shapes(TEST_IMAGES, seed + 1, noisy)
        return DomainData(train_x, train_y, test_x, test_y)

    return load


DOMAINS = (
    Domain("@name@.clean", len(CLASSES), _loader(False, 0), GENERATOR_VERSION,
           "white shapes on black, drawn from a seeded generator", ("torch",)),
    Domain("@name@.noisy", len(CLASSES), _loader(True, 100), GENERATOR_VERSION,
           "shapes in random colours on noisy coloured backgrounds, drawn from a seeded generator", ("torch",)),
)

SUITE = Suite(
    name="@name@",
    domains=tuple(d.name for d in DOMAINS),
    num_classes=len(CLASSES),
    image_size=IMAGE_SIZE,
    budgets={
        # `smoke` only checks that everything runs; its numbers mean nothing. CHANGE ME: add the budgets
        # of real tables, and name the one at which the baselines have converged in `converged_budget`.
        "smoke": Budget(teacher_steps=20, student_steps=10, batch_size=32, lr=1e-2, eval_points=2),
    },
    default_teacher="resnet18_w16_32px",   # any timm name, or one a plugin resolves
    default_student="resnet10_w8_32px",
    default_recipes=("source_only", "kd", "target_oracle"),
    default_seeds=(0,),
    default_budget="smoke",
    default_tasks=("clean_to_noisy",),
    # The augmentation of source batches: the teacher's and, under augmentation parity, every student's.
    teacher_augmentation=Augmentation(rotation_degrees=10, scale=(0.9, 1.1), translate=0.06),
    description="CHANGE ME: one line on what the suite measures",
)


@hookimpl
def cdkd_register_domains(register: RegisterDomains) -> None:
    for domain in DOMAINS:
        register(domain)


@hookimpl
def cdkd_register_suites(register: RegisterSuites) -> None:
    register(SUITE)
'''

_SUITE_TEST = '''\
"""Tests of the @name@ suite: its domains and the suite itself against the conformance kit."""

from __future__ import annotations

import pytest
import torch
from @module@ import DOMAINS, SUITE, draw_shapes

from cdkd_bench import Domain
from cdkd_bench.plugins import load_host
from cdkd_bench.testing import check_domain, check_suite


@pytest.mark.parametrize("domain", DOMAINS, ids=lambda d: d.name)
def test_domain_conforms(domain: Domain) -> None:
    check_domain(domain)


def test_suite_conforms() -> None:
    check_suite(SUITE)


def test_suite_conforms_among_the_installed_plugins() -> None:
    # Its domains, default recipes and architectures must exist where cdkd-bench will run it.
    host = load_host()
    if SUITE.name not in host.suites:
        pytest.skip("install this package first (pip install -e .) to check the suite among the installed plugins")
    check_suite(SUITE, host=host)


def test_generation_is_seeded() -> None:
    first, second = draw_shapes(8, 0, True), draw_shapes(8, 0, True)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.equal(first[0], draw_shapes(8, 1, True)[0])
'''

_SUITE_README = '''\
# @dist@

The `@name@` suite for cdkd-bench, as a plugin package: two domains
generated from a seeded random generator (`@name@.clean`, `@name@.noisy`) and a suite with a
`smoke` budget. Replace the generated domains with your data in `@module@/__init__.py`, where
the comments marked CHANGE ME say what to change.

## Install

```bash
pip install -e '.[test]'
cdkd-bench list suites      # shows `@name@`
cdkd-bench list tasks       # @name@.clean_to_noisy and @name@.noisy_to_clean
```

## Test

```bash
python -m pytest
```

## Run

```bash
cdkd-bench run --suite @name@ --budget smoke --recipes kd --seeds 0 --store @name@.sqlite --out-dir @name@-tables
```
'''
