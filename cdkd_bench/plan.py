"""A grid request → the run specs it implies, every name and combination checked before any training."""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Callable, Hashable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import torch

from cdkd_bench.api import Method, MethodInfo, Suite, Task
from cdkd_bench.compute import default_threads, numerics, pick_device
from cdkd_bench.data import domain_fingerprint, domain_split_sizes, load_domain
from cdkd_bench.ensemble import unsupported_in_ensemble
from cdkd_bench.errors import UserError, unknown_name
from cdkd_bench.hparams import build_hparams, canonical_recipe, split_overrides
from cdkd_bench.label_regimes import check_shots_fit, parse_regime
from cdkd_bench.locations import default_cache_dir, default_data_root
from cdkd_bench.networks import network_info, supports_intermediates
from cdkd_bench.plugins import Host
from cdkd_bench.recipes import reads_target_images
from cdkd_bench.request import GridRequest
from cdkd_bench.spec import SOURCE_TEACHER, RunSpec, TeacherSpec, canonical_json
from cdkd_bench.teachers import check_teacher_recipe
from cdkd_bench.weights import weights_hash

T = TypeVar("T")
DOMAIN_ROLES = ("source", "target")
log = logging.getLogger("cdkd_bench")


def expand(host: Host, request: GridRequest, cache_dir: Path | None = None, data_root: Path | None = None) -> list[RunSpec]:
    """Every run the request implies, reference recipes included, in teacher-friendly order.

    Everything that can be checked without training is checked here: names, hparams,
    devices, and whether each recipe's components fit the chosen architectures and suite
    (intermediate stages, views, at most one component owning the step). The domains are
    generated or decoded here (once, into ``cache_dir``): their content hashes are part of
    every run's identity.
    """
    suite = host.suite(request.suite or host.default("suite"))
    named = request.tasks or suite.default_tasks
    tasks = _distinct("task", [host.task(suite, t) for t in named], lambda t: t.name) if named else list(suite.tasks)
    budget_name = request.budget or suite.default_budget
    if budget_name not in suite.budgets:
        raise unknown_name(f"budget of suite {suite.name!r}", budget_name, suite.budgets)
    budget = suite.budgets[budget_name]
    regime = parse_regime(request.label_regime)
    if regime.reveals_target_labels and request.vmap_seeds:
        raise UserError(f"label regime {regime.name!r} cannot train seeds as a vmapped ensemble yet; drop --vmap-seeds")
    host.selectors.get(request.selection or host.default("selection rule"))
    host.executors.get(request.executor or host.default("executor"))
    teacher_arch = request.teacher or suite.default_teacher
    student_arch = request.student or suite.default_student
    seeds = _distinct("seed", request.seeds, lambda s: s) if request.seeds is not None else list(suite.default_seeds)
    if not seeds:
        raise UserError("the grid has no seeds; give at least one, e.g. --seeds 0")
    if not request.recipes and not suite.default_recipes:
        raise UserError(f"suite {suite.name!r} declares no default recipes; name some with --recipes")
    asked = _distinct("recipe", [canonical_recipe(r, host.methods) for r in (request.recipes or suite.default_recipes)], lambda r: r)
    references = [e.name for e in host.methods if e.value.reference]
    recipes = list(dict.fromkeys([*references, *asked]))
    teacher_recipes = _distinct("teacher recipe", [check_teacher_recipe(r, host.methods) for r in request.teacher_recipe], lambda r: r)
    adapting = [r for r in teacher_recipes if r != SOURCE_TEACHER]
    # An hparam override applies to its component wherever it is used: in student and teacher recipes alike.
    overrides = split_overrides(request.hparams, [*recipes, *adapting], host.methods)
    # Every component's hparams in full, defaults included, so a changed default changes the hash.
    resolved = {name: build_hparams(host.methods.get(name), overrides.get(name, {}))
                for recipe in [*recipes, *adapting] for name in recipe.split("+")}
    _check_recipes_fit(host, suite, recipes, resolved, teacher_arch, student_arch, request.vmap_seeds)
    _check_teacher_recipes_fit(host, suite, adapting, resolved, teacher_arch)
    resolved_hparams = {name: dataclasses.asdict(hparams) for name, hparams in resolved.items()}

    augmentation = suite.teacher_augmentation.to_dict() if suite.teacher_augmentation else None
    student_augmentation = augmentation if request.augmentation_parity else None
    data_hash = _data_hashes(host, suite, tasks, cache_dir or default_cache_dir(), data_root or default_data_root())
    for target in dict.fromkeys(task.target for task in tasks):
        if regime.shots is not None:
            labels = load_domain(host.domains.get(target), suite.image_size, cache_dir or default_cache_dir(),
                                 data_root or default_data_root()).train_y
            check_shots_fit(regime, labels, suite.num_classes, target)
    if request.vmap_seeds and request.compile:
        raise UserError("vmapped seeds and --compile cannot be combined yet; choose one")
    device, threads = pick_device(request.device), request.threads or default_threads()
    computed_as = numerics(device, threads, request.compile, request.vmap_seeds)
    teacher_computed_as = numerics(device, threads, request.compile)  # teachers train one by one either way
    no_target_images = _tasks_without_target_images(host, suite, tasks, [*recipes, *adapting], cache_dir or default_cache_dir(),
                                                    data_root or default_data_root())
    weights = {role: weights_hash(Path(path)) if path else "" for role, path in
               (("teacher", request.teacher_weights), ("student", request.student_weights))}
    specs = []
    for seed, teacher_recipe, task in itertools.product(seeds, teacher_recipes, tasks):
        teacher = TeacherSpec(
            suite=suite.name, source=task.source, source_version=host.domains.get(task.source).version,
            arch=teacher_arch, teacher_recipe=teacher_recipe, pretrained=suite.pretrained or bool(weights["teacher"]),
            weights=weights["teacher"], backbone_lr_mult=budget.backbone_lr_mult,
            num_classes=suite.num_classes, image_size=suite.image_size,
            steps=budget.teacher_steps, batch_size=budget.batch_size, lr=budget.lr,
            weight_decay=budget.weight_decay, seed=seed, augmentation=augmentation, numerics=teacher_computed_as,
            source_data=data_hash[task.source],
        )
        if teacher_recipe != SOURCE_TEACHER:
            components = teacher_recipe.split("+")
            teacher = dataclasses.replace(
                teacher, target=task.target, target_version=host.domains.get(task.target).version, target_data=data_hash[task.target],
                target_evaluation="transductive" if task.target in suite.transductive_targets else "test split",
                recipe_hparams={name: resolved_hparams[name] for name in components},
                recipe_versions={name: host.methods.get(name).version for name in components},
            )
        for recipe in recipes:
            components = recipe.split("+")
            if teacher_recipe != teacher_recipes[0] and not any(host.methods.get(n).needs_teacher or host.methods.get(n).reference
                                                                for n in components):
                continue  # its numbers cannot depend on the teacher: it runs once, with the first teacher recipe
            if task.name in no_target_images and any(reads_target_images(host.methods.get(n)) for n in components):
                continue
            # Target labels in training (the oracle's, or the regime's): scored on the held-out test split.
            labelled_target = regime.reveals_target_labels or any(host.methods.get(n).uses_target_labels for n in components)
            transductive = task.target in suite.transductive_targets and not labelled_target
            specs.append(RunSpec(
                suite=suite.name, task=task.name, source=task.source, target=task.target,
                target_version=host.domains.get(task.target).version, teacher=teacher,
                student_arch=student_arch, recipe=recipe, hparams={name: resolved_hparams[name] for name in components},
                method_versions={n: host.methods.get(n).version for n in components},
                label_regime=request.label_regime, budget=budget_name,
                steps=budget.student_steps, batch_size=budget.batch_size, lr=budget.lr,
                weight_decay=budget.weight_decay, seed=seed, numerics=computed_as,
                eval_points=budget.eval_points, backbone_lr_mult=budget.backbone_lr_mult,
                source_augmentation=student_augmentation, target_data=data_hash[task.target],
                evaluation="transductive" if transductive else "test split",
                student_pretrained=suite.pretrained or bool(weights["student"]), student_weights=weights["student"],
            ))
    return specs


def _data_hashes(host: Host, suite: Suite, tasks: Iterable[Task], cache_dir: Path, data_root: Path | None) -> dict[str, str]:
    """Each domain's content hash, generating or decoding (and caching) the domains the tasks need."""
    domains = dict.fromkeys(d for task in tasks for d in (task.source, task.target))
    hashes = {name: domain_fingerprint(host.domains.get(name), suite.image_size, cache_dir, data_root) for name in domains}
    for task in tasks:
        if domain_split_sizes(host.domains.get(task.source), suite.image_size, cache_dir, data_root)[0] == 0:
            raise UserError(f"task {task.name!r}: source {task.source!r} has no training images (a test-only domain can be "
                            "a target, never a source)")
    return hashes


def _tasks_without_target_images(host: Host, suite: Suite, tasks: Iterable[Task], recipes: Iterable[str], cache_dir: Path,
                                 data_root: Path | None) -> set[str]:
    """Tasks whose target has no unlabelled images to train on (a test-only domain); a recipe that needs
    them there is refused, and the reference recipes that would need them are left out of those tasks."""
    readers = sorted({n for recipe in recipes for n in recipe.split("+") if reads_target_images(host.methods.get(n))})
    if not readers:
        return set()
    empty = {task.name for task in tasks if task.target not in suite.transductive_targets
             and domain_split_sizes(host.domains.get(task.target), suite.image_size, cache_dir, data_root)[0] == 0}
    needing = [n for n in readers if not host.methods.get(n).reference]
    if empty and needing:
        task = sorted(empty)[0]
        raise UserError(f"task {task!r} has a target with no training images, and {', '.join(needing)} needs unlabelled "
                        "target images to train or adapt; drop the task or those components")
    for task in sorted(empty):
        log.warning("task %s: its target has no training images, so %s does not run there", task, ", ".join(readers))
    return empty


def _planning_info(host: Host, suite: Suite, teacher_arch: str, student_arch: str) -> tuple[MethodInfo, dict[str, Any], dict[str, Any]]:
    """What components are built with at planning time (on the CPU, one step): their info, the networks and their shapes."""
    cpu = torch.device("cpu")
    archs = {"teacher": teacher_arch, "student": student_arch}
    nets = {role: host.architecture(arch, suite.num_classes) for role, arch in archs.items()}  # typos fail here, with suggestions
    shapes = {role: network_info(nets[role], arch, suite.input_size, cpu) for role, arch in archs.items()}
    info = MethodInfo(num_classes=suite.num_classes, student_features=shapes["student"].num_features,
                      teacher_features=shapes["teacher"].num_features, total_steps=1, student=shapes["student"],
                      teacher=shapes["teacher"], split_sizes={"source": 1, "target": 1}, image_size=suite.input_size)
    return info, nets, shapes


def teacher_every_step(host: Host, specs: Iterable[RunSpec]) -> list[bool]:
    """For each spec, whether a component runs the teacher at every step (augmented source batches,
    intermediate maps or views), as configured: a grid starts those first, since they take longest. Each distinct component is built once."""
    infos: dict[tuple[str, str, str], MethodInfo] = {}
    reads: dict[tuple[tuple[str, str, str], str, str], bool] = {}
    answers = []
    for spec in specs:
        archs = (spec.suite, spec.teacher.arch, spec.student_arch)
        every_step = False
        for name in spec.components:
            method = host.methods.get(name)
            if not method.needs_teacher:
                continue
            if spec.source_augmentation is not None:  # augmented source batches: the teacher runs on each one
                every_step = True
                continue
            key = (archs, name, canonical_json(spec.hparams.get(name, {})))
            if key not in reads:
                if archs not in infos:
                    infos[archs] = _planning_info(host, host.suite(spec.suite), spec.teacher.arch, spec.student_arch)[0]
                component = method(build_hparams(method, spec.hparams.get(name, {})), infos[archs])
                reads[key] = bool(component.intermediates or component.views)
            every_step = every_step or reads[key]
        answers.append(every_step)
    return answers


def _check_recipes_fit(host: Host, suite: Suite, recipes: list[str], hparams: dict[str, Any], teacher_arch: str, student_arch: str,
                       vmap_seeds: bool = False) -> None:
    """Refuse, before any training, a recipe whose components cannot work with these networks or this suite."""
    info, nets, shapes = _planning_info(host, suite, teacher_arch, student_arch)
    built: dict[str, Method] = {}
    for recipe in recipes:
        names = recipe.split("+")
        _check_one_owner(host, "recipe", recipe)
        for name in names:
            if name not in built:
                try:
                    built[name] = host.methods.get(name)(hparams[name], info)
                except (ValueError, TypeError) as exc:
                    raise UserError(f"component {name!r} cannot work with teacher {teacher_arch!r} and student {student_arch!r}: "
                                    f"{exc}") from None
            _check_component_fits(built[name], suite, nets, shapes)
            reason = unsupported_in_ensemble(built[name]) if vmap_seeds else None
            if reason is not None:
                raise UserError(f"recipe {recipe!r} cannot train its seeds as a vmapped ensemble: component {name!r} {reason[3:]}; "
                                "run it without vmapped seeds")


def _check_one_owner(host: Host, kind: str, recipe: str) -> None:
    owners = [n for n in recipe.split("+") if host.methods.get(n).owns_step]
    if len(owners) > 1:
        raise UserError(f"{kind} {recipe!r} has two components that own the training step ({' and '.join(owners)}); "
                        "combine at most one of them with others")


def _check_teacher_recipes_fit(host: Host, suite: Suite, teacher_recipes: list[str], hparams: dict[str, Any], teacher_arch: str) -> None:
    """Refuse, before any training, a teacher recipe whose components cannot adapt this teacher architecture."""
    if not teacher_recipes:
        return
    info, nets, shapes = _planning_info(host, suite, teacher_arch, teacher_arch)
    info = dataclasses.replace(info, teacher=None, teacher_features=None)  # the teacher is the network being trained
    for recipe in teacher_recipes:
        names = recipe.split("+")
        _check_one_owner(host, "teacher recipe", recipe)
        for name in names:
            try:
                component = host.methods.get(name)(hparams[name], info)
            except (ValueError, TypeError) as exc:
                raise UserError(f"component {name!r} cannot adapt teacher {teacher_arch!r}: {exc}") from None
            _check_component_fits(component, suite, nets, shapes)


def _check_component_fits(component: Method, suite: Suite, nets: dict[str, Any], shapes: dict[str, Any]) -> None:
    name = component.name
    for role in ("student", "teacher") if component.needs_teacher else ("student",):
        if not component.intermediates:
            break
        arch, count = shapes[role].arch, len(shapes[role].stages)
        if not supports_intermediates(nets[role]):
            raise UserError(f"component {name!r} reads intermediate feature maps, which architecture {arch!r} cannot give "
                            "(it has no timm forward_intermediates / feature_info); choose a timm architecture that has them")
        for stage in component.intermediates:
            if not -count <= stage < count:
                raise UserError(f"component {name!r} asks for stage {stage} of architecture {arch!r}, which has {count} stages "
                                f"(use {-count} to {count - 1})")
    for domain, views in component.views.items():
        if domain not in DOMAIN_ROLES:
            raise UserError(f"component {name!r} declares views for {domain!r}; views are declared for 'source' or 'target'")
        for view in views:
            if view not in suite.views:
                known = ", ".join(sorted(suite.views)) or "none"
                raise UserError(f"component {name!r} reads view {view!r}, which suite {suite.name!r} does not define (it defines: {known})")


def _distinct(kind: str, items: Iterable[T], key: Callable[[T], Hashable]) -> list[T]:
    """Items in order with repeats dropped; a repeat is said, since it usually is a slip."""
    seen: dict[Hashable, T] = {}
    for item in items:
        if key(item) in seen:
            log.warning("%s %s is listed more than once; it runs once", kind, key(item))
        seen.setdefault(key(item), item)
    return list(seen.values())


