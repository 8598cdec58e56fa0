"""A grid request (flags or a TOML file) → run specs → results, skipping runs already done."""

from __future__ import annotations

import dataclasses
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from cdkd_bench.engine import EngineSettings, check_teacher_recipe, execute, execute_safely, prepare_teacher
from cdkd_bench.errors import UserError, close_matches, unknown_name
from cdkd_bench.hparams import build_hparams, canonical_recipe, split_overrides
from cdkd_bench.plugins import Host
from cdkd_bench.spec import RunSpec, TeacherSpec
from cdkd_bench.store import Store
from cdkd_bench.training import progress_disabled

LABEL_REGIMES = ("uda",)
DEFAULT_SUITE = "embedded"


@dataclass(frozen=True)
class GridRequest:
    """What the user asked for; ``None`` means the suite's default."""

    suite: str = DEFAULT_SUITE
    tasks: tuple[str, ...] | None = None
    teacher: str | None = None
    student: str | None = None
    recipes: tuple[str, ...] | None = None
    seeds: tuple[int, ...] | None = None
    budget: str | None = None
    hparams: Mapping[str, Any] = field(default_factory=dict)
    teacher_recipe: str = "source"
    label_regime: str = "uda"
    selection: str = "last"
    executor: str = "local"
    store: str = "cdkd-results.sqlite"
    device: str = "auto"


_LIST_KEYS = {"tasks": str, "recipes": str, "seeds": int}


def read_grid_file(path: Path) -> dict[str, Any]:
    """Parse a TOML grid file into GridRequest fields, rejecting unknown keys and wrong types."""
    try:
        with open(path, "rb") as handle:
            raw = tomllib.load(handle)
    except FileNotFoundError:
        raise UserError(f"grid file {str(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"grid file {str(path)!r} is not valid TOML: {exc}") from None
    known = {f.name for f in fields(GridRequest)}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            matches = close_matches(key, known)
            hint = f"; did you mean {' or '.join(repr(m) for m in matches)}?" if matches else ""
            raise UserError(f"unknown key {key!r} in grid file {str(path)!r}{hint} (known keys: {', '.join(sorted(known))})")
        if key in _LIST_KEYS:
            kind = _LIST_KEYS[key]
            if not isinstance(value, list) or not all(isinstance(v, kind) and not isinstance(v, bool) for v in value):
                raise UserError(f"grid file key {key!r} must be a list of {kind.__name__}s, got {value!r}")
            value = tuple(value)
        elif key == "hparams":
            value = _flatten_hparams(value, path)
        elif not isinstance(value, str):
            raise UserError(f"grid file key {key!r} must be a string, got {value!r}")
        out[key] = value
    return out


def _flatten_hparams(value: Any, path: Path) -> dict[str, Any]:
    """Accept both ``[hparams] "kd.temperature" = 2`` and ``[hparams.kd] temperature = 2``."""
    if not isinstance(value, dict):
        raise UserError(f"grid file key 'hparams' must be a table, got {value!r}")
    flat: dict[str, Any] = {}
    for key, item in value.items():
        if isinstance(item, dict):
            for name, inner in item.items():
                flat[f"{key}.{name}"] = inner
        else:
            flat[key] = item
    return flat


def expand(host: Host, request: GridRequest) -> list[RunSpec]:
    """Every run the request implies, reference recipes included, in teacher-friendly order."""
    suite = host.suite(request.suite)
    tasks = [host.task(suite, t) for t in request.tasks] if request.tasks else list(suite.tasks)
    budget_name = request.budget or suite.default_budget
    if budget_name not in suite.budgets:
        raise unknown_name(f"budget of suite {suite.name!r}", budget_name, suite.budgets)
    budget = suite.budgets[budget_name]
    if request.label_regime not in LABEL_REGIMES:
        raise UserError(f"label regime {request.label_regime!r} is not supported yet; use one of {', '.join(LABEL_REGIMES)}")
    host.selectors.get(request.selection)
    host.executors.get(request.executor)
    teacher_arch = request.teacher or suite.default_teacher
    student_arch = request.student or suite.default_student
    for arch in dict.fromkeys([teacher_arch, student_arch]):
        host.architecture(arch, suite.num_classes)  # fails early, with suggestions, on a typo
    seeds = request.seeds if request.seeds is not None else suite.default_seeds
    if not seeds:
        raise UserError("the grid has no seeds; give at least one, e.g. --seeds 0")
    asked = [canonical_recipe(r, host.methods) for r in (request.recipes or suite.default_recipes)]
    references = [e.name for e in host.methods if e.value.reference]
    recipes = list(dict.fromkeys([*references, *asked]))
    overrides = split_overrides(request.hparams, recipes, host.methods)
    check_teacher_recipe(request.teacher_recipe)
    # Every component's hparams in full, defaults included, so a changed default changes the hash.
    resolved_hparams = {
        name: dataclasses.asdict(build_hparams(host.methods.get(name), overrides.get(name, {})))
        for recipe in recipes for name in recipe.split("+")
    }

    augmentation = dataclasses.asdict(suite.teacher_augmentation) if suite.teacher_augmentation else None
    specs = []
    for seed in seeds:
        for task in tasks:
            teacher = TeacherSpec(
                suite=suite.name, source=task.source, source_version=host.domains.get(task.source).version,
                arch=teacher_arch, teacher_recipe=request.teacher_recipe, pretrained=False,
                num_classes=suite.num_classes, image_size=suite.image_size, budget=budget_name,
                steps=budget.teacher_steps, batch_size=budget.batch_size, lr=budget.lr,
                weight_decay=budget.weight_decay, seed=seed, augmentation=augmentation,
            )
            for recipe in recipes:
                components = recipe.split("+")
                hparams = {name: resolved_hparams[name] for name in components}
                specs.append(RunSpec(
                    suite=suite.name, task=task.name, source=task.source, target=task.target,
                    target_version=host.domains.get(task.target).version, teacher=teacher,
                    student_arch=student_arch, recipe=recipe, hparams=hparams,
                    method_versions={n: host.methods.get(n).version for n in components},
                    label_regime=request.label_regime, selection=request.selection, budget=budget_name,
                    steps=budget.student_steps, batch_size=budget.batch_size, lr=budget.lr,
                    weight_decay=budget.weight_decay, seed=seed,
                ))
    return specs


@dataclass
class GridSummary:
    total: int = 0
    skipped: int = 0
    done: int = 0
    failed: int = 0
    teachers_trained: int = 0
    failures: list[tuple[RunSpec, str]] = field(default_factory=list)


def _log_to_stderr(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


def _observe(host: Host, hook: str, **kwargs: Any) -> None:
    """Call an observer hook; a broken observer is reported and never stops the grid."""
    try:
        getattr(host.pm.hook, hook)(**kwargs)
    except Exception as exc:  # noqa: BLE001
        _log_to_stderr(f"cdkd-bench: warning: an observer of {hook} failed: {type(exc).__name__}: {exc}")


def _student_job(spec: RunSpec, host: Host, settings: EngineSettings) -> dict[str, Any]:
    _observe(host, "cdkd_before_run", spec=spec.to_dict())
    return execute_safely(partial(execute, spec, host, settings))


def run_grid(
    host: Host,
    specs: list[RunSpec],
    store: Store,
    settings: EngineSettings,
    executor_name: str = "local",
    show_progress: bool = True,
    log: Callable[[str], None] = _log_to_stderr,
) -> GridSummary:
    """Run every spec not already done: first the teachers they need, then the students.

    Each result is stored the moment it arrives, so a killed grid resumes where it stopped.
    """
    summary = GridSummary(total=len(specs))
    done = store.done_ids()
    pending = [s for s in specs if s.run_id not in done]
    summary.skipped = len(specs) - len(pending)
    if not pending:
        return summary
    executor = host.executors.get(executor_name)()

    # Stage 1: each distinct teacher once, so parallel executors never train one twice.
    teachers = list({s.teacher.key: s.teacher for s in pending}.values())
    teacher_errors: dict[str, str] = {}
    teacher_bar = tqdm(total=len(teachers), desc="teachers", unit="teacher", disable=progress_disabled(show_progress))

    def on_teacher(index: int, result: Mapping[str, Any]) -> None:
        teacher = teachers[index]
        teacher_bar.update()
        if result["status"] != "done":
            teacher_errors[teacher.key] = result["error"]
            log(f"teacher {teacher.arch} on {teacher.source} (seed {teacher.seed}) failed: {result['error']}")
        elif result["teacher_trained"]:
            summary.teachers_trained += 1
            log(f"teacher {teacher.arch} on {teacher.source} (seed {teacher.seed}): "
                f"source-val acc {result['metrics']['source_val.acc']:.1f}% in {result['metrics']['train_s']:.1f}s")

    executor.run([partial(execute_safely, partial(prepare_teacher, t, host, settings)) for t in teachers], on_teacher)
    teacher_bar.close()

    # Stage 2: the student runs; those whose teacher failed fail with its error, untried.
    runnable = [s for s in pending if s.teacher.key not in teacher_errors]
    for spec in pending:
        if spec.teacher.key in teacher_errors:
            _finish(host, store, summary, spec, {"status": "failed", "error": f"its teacher failed: {teacher_errors[spec.teacher.key]}"}, log)
    run_bar = tqdm(total=len(runnable), desc="runs", unit="run", disable=progress_disabled(show_progress))

    def on_run(index: int, result: Mapping[str, Any]) -> None:
        _finish(host, store, summary, runnable[index], dict(result), log)
        run_bar.update()

    executor.run([partial(_student_job, s, host, settings) for s in runnable], on_run)
    run_bar.close()
    return summary


def _finish(host: Host, store: Store, summary: GridSummary, spec: RunSpec, result: dict[str, Any], log: Callable[[str], None]) -> None:
    store.record(spec, result)
    label = f"{spec.task} {spec.recipe} seed {spec.seed}"
    if result["status"] == "done":
        summary.done += 1
        m = result["metrics"]
        log(f"{label}: target acc {m['target_test.acc']:.1f}% (teacher {m['teacher.target_test.acc']:.1f}%) "
            f"in {result['timings']['total_s']:.1f}s")
    else:
        summary.failed += 1
        summary.failures.append((spec, result["error"]))
        log(f"{label}: FAILED: {result['error']}")
    _observe(host, "cdkd_after_run", spec=spec.to_dict(), result=result)
