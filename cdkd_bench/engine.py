"""Trains and evaluates ONE student run: its data, its (cached) teacher, its components, its checkpoints."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from cdkd_bench.api import DomainRole, Method, MethodInfo, Outputs
from cdkd_bench.augment import augmentation_from_dict, augmenter
from cdkd_bench.compute import check_numerics, make_deterministic, pick_device
from cdkd_bench.data import Split, generator_packages
from cdkd_bench.ensemble import fit_ensemble
from cdkd_bench.errors import UserError
from cdkd_bench.evaluation import checkpoint_steps, classification_metrics, evaluate_checkpoint
from cdkd_bench.networks import multiply_accumulates, network_info
from cdkd_bench.plugins import Host
from cdkd_bench.provenance import provenance
from cdkd_bench.recipes import build_recipe, view_transforms
from cdkd_bench.settings import EngineSettings
from cdkd_bench.spec import RunSpec, derive_seed
from cdkd_bench.task_data import TaskData, load_task_data
from cdkd_bench.teacher_outputs import SplitName, cached_teacher_outputs
from cdkd_bench.teachers import obtain_teacher
from cdkd_bench.training import RunFailed, fit
from cdkd_bench.weights import planned_weights

__all__ = ["EngineSettings", "build_components", "execute", "execute_ensemble", "execute_safely"]


def build_components(host: Host, spec: RunSpec, info: MethodInfo, device: torch.device) -> list[Method]:
    return build_recipe(host, spec.components, spec.hparams, info, device)


def _method_info(spec: RunSpec, student: nn.Module, teacher: nn.Module, data: TaskData, image_size: int, num_classes: int,
                 device: torch.device) -> MethodInfo:
    student_info = network_info(student, spec.student_arch, image_size, device)
    teacher_info = network_info(teacher, spec.teacher.arch, image_size, device)
    return MethodInfo(
        num_classes=num_classes, student_features=student_info.num_features, teacher_features=teacher_info.num_features,
        total_steps=spec.steps, student=student_info, teacher=teacher_info,
        split_sizes={"source": len(data.source_train), "target": len(data.target_train)}, image_size=image_size,
    )


def source_augmenter(spec: RunSpec, size: int | None = None) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The student's source augmentation under augmentation parity (seeded per run, output ``size`` square), else None."""
    policy = augmentation_from_dict(spec.source_augmentation)
    return augmenter(policy, derive_seed(spec.seed, "student-source-augment"), size) if policy else None


@dataclass
class _Prepared:
    """One run, ready to train: its teacher, student, components and the teacher outputs it reads."""

    spec: RunSpec
    teacher: nn.Module
    teacher_metrics: dict[str, float]
    teacher_trained: bool
    student: nn.Module
    components: list[Method]
    uses_target: bool
    reveal_labels: bool
    teacher_target: torch.Tensor
    tables: dict[DomainRole, Outputs] | None
    teacher_s: float
    history: list[dict[str, Any]] = field(default_factory=list)


def _prepare(spec: RunSpec, host: Host, settings: EngineSettings, device: torch.device, data: TaskData) -> _Prepared:
    started = time.perf_counter()
    suite = host.suite(spec.suite)
    teacher, teacher_metrics, teacher_trained = obtain_teacher(host, spec.teacher, data.source_train, data.source_val, settings, device)
    teacher_s = time.perf_counter() - started
    # The same initial student for every recipe of a (task, seed): comparisons are paired.
    torch.manual_seed(derive_seed(spec.seed, "student-init"))
    weights = planned_weights(settings.student_weights, spec.student_weights, "--student-weights")
    student = host.architecture(spec.student_arch, suite.num_classes, spec.student_pretrained, weights)
    student = student.to(device).to(memory_format=torch.channels_last)
    info = _method_info(spec, student, teacher, data, suite.input_size, suite.num_classes, device)
    components = build_components(host, spec, info, device)
    needs_teacher = any(c.needs_teacher for c in components)
    uses_target = any(c.uses_target for c in components)

    def teacher_table(domain: str, split: str, images: Split) -> Outputs:
        name = SplitName(domain, host.domains.get(domain).version, suite.image_size, split)
        return cached_teacher_outputs(settings, spec.teacher, teacher, name, images)

    target_train_split, target_test_split = data.target_splits
    teacher_target = teacher_table(spec.target, target_test_split, data.target_test).logits.argmax(dim=1)
    tables: dict[DomainRole, Outputs] | None = None
    if needs_teacher and not any(c.intermediates for c in components):  # else the teacher runs per step anyway
        tables = {}
        if spec.source_augmentation is None:  # augmented source batches are new images every step
            tables["source"] = teacher_table(spec.source, "source_train", data.source_train)
        if uses_target:
            tables["target"] = teacher_table(spec.target, target_train_split, data.target_train)
    return _Prepared(spec, teacher, teacher_metrics, teacher_trained, student, components, uses_target,
                     any(c.uses_target_labels for c in components), teacher_target, tables, teacher_s)


def _evaluate(run: _Prepared, data: TaskData, num_classes: int, step: int) -> None:
    run.history.append(evaluate_checkpoint(run.student, run.components, step, data.source_val, data.target_train, data.target_test,
                                           run.teacher_target, num_classes, data.target_val))


def _result(run: _Prepared, data: TaskData, num_classes: int, final_losses: dict[str, float], timings: dict[str, float],
            host: Host, settings: EngineSettings, device: torch.device, **extra_provenance: Any) -> dict[str, Any]:
    teacher_target_metrics = classification_metrics(run.teacher_target, data.target_test.y, num_classes)
    input_size = host.suite(run.spec.suite).input_size
    # The run's headline numbers are its last checkpoint; selection rules choose among all of them later.
    metrics: dict[str, Any] = {
        **{k: v for k, v in run.history[-1].items() if k != "step"},
        "teacher.target_test.acc": teacher_target_metrics["acc"],
        "teacher.target_test.balanced_acc": teacher_target_metrics["balanced_acc"],
        "teacher.source_val.acc": run.teacher_metrics["source_val.acc"],
        "student.params": sum(p.numel() for p in run.student.parameters()),
        "teacher.params": sum(p.numel() for p in run.teacher.parameters()),
        # Per image, at the suite's input size: what a table's compute axis reads.
        "student.macs": multiply_accumulates(run.student, input_size, device),
        "teacher.macs": multiply_accumulates(run.teacher, input_size, device),
        "checkpoints": run.history,
        **{f"train_loss.{k}": v for k, v in final_losses.items()},
    }
    metrics["target_test.images"] = len(data.target_test)
    plugin_versions = {p.name: p.version for p in host.plugins if not p.error}
    spec = run.spec
    data_identity = {name: {"hash": digest, "packages": generator_packages(host.domains.get(name))}
                     for name, digest in ((spec.source, spec.teacher.source_data), (spec.target, spec.target_data))}
    extra_provenance = {"data": data_identity, **extra_provenance}
    return {
        "metrics": metrics,
        "timings": {**timings, "teacher_train_s": run.teacher_metrics.get("train_s", 0.0) if run.teacher_trained else 0.0},
        "teacher_trained": run.teacher_trained,
        "teacher_key": run.spec.teacher.key,
        "provenance": {**provenance(device, plugin_versions, settings.command), **extra_provenance},
    }


def _start(spec: RunSpec, settings: EngineSettings, vmapped: bool = False) -> torch.device:
    device = pick_device(settings.device)
    check_numerics(spec.numerics, device, settings.resolved_threads(), settings.compile, vmapped)
    make_deterministic()
    return device


def execute(spec: RunSpec, host: Host, settings: EngineSettings) -> dict[str, Any]:
    """Run one spec end to end and return its metrics, checkpoints, timings and provenance (raises on failure)."""
    started = time.perf_counter()
    device = _start(spec, settings)
    torch.manual_seed(derive_seed(spec.seed, "run"))
    num_classes = host.suite(spec.suite).num_classes
    data = load_task_data(host, spec, settings, device)
    data_s = time.perf_counter() - started
    run = _prepare(spec, host, settings, device, data)

    train_started = time.perf_counter()
    final_losses = fit(
        run.student, run.components, data.source_train, data.target_train if run.uses_target else None,
        steps=spec.steps, batch_size=spec.batch_size, lr=spec.lr, weight_decay=spec.weight_decay,
        seed=derive_seed(spec.seed, "student-batches"),
        teacher=run.teacher if any(c.needs_teacher for c in run.components) else None,
        teacher_tables=run.tables,
        reveal_target_labels=run.reveal_labels,
        augment=source_augmenter(spec, host.suite(spec.suite).input_size),
        views=view_transforms(host.suite(spec.suite), run.components, spec.seed),
        backbone_lr_mult=spec.backbone_lr_mult,
        checkpoints=checkpoint_steps(spec.steps, spec.eval_points), on_checkpoint=lambda step: _evaluate(run, data, num_classes, step),
        desc=f"{spec.recipe} seed {spec.seed}", show_progress=settings.show_progress, compile_step=settings.compile,
        labelled_target=data.labelled_target,
    )
    timings = {"data_s": data_s, "teacher_s": run.teacher_s, "student_s": time.perf_counter() - train_started,
               "total_s": time.perf_counter() - started}
    return _result(run, data, num_classes, final_losses, timings, host, settings, device)


def execute_ensemble(specs: Sequence[RunSpec], host: Host, settings: EngineSettings) -> list[dict[str, Any]]:
    """Run the seeds of one configuration as one vmapped ensemble; one result per spec, in order (raises on failure)."""
    started = time.perf_counter()
    first = specs[0]
    if any(s.task != first.task or s.recipe != first.recipe or s.hparams != first.hparams for s in specs):
        raise ValueError("an ensemble trains the seeds of one task, recipe and configuration")
    if first.label_regime != "uda":
        raise UserError(f"label regime {first.label_regime!r} cannot train seeds as a vmapped ensemble yet; run it without vmapped seeds")
    device = pick_device(settings.device)
    for spec in specs:
        _start(spec, settings, vmapped=True)
    num_classes = host.suite(first.suite).num_classes
    data = load_task_data(host, first, settings, device)  # the task's splits do not depend on the seed
    data_s = time.perf_counter() - started
    runs = []
    for spec in specs:
        torch.manual_seed(derive_seed(spec.seed, "run"))
        runs.append(_prepare(spec, host, settings, device, data))

    def on_checkpoint(step: int) -> None:
        for run in runs:
            _evaluate(run, data, num_classes, step)

    train_started = time.perf_counter()
    final_losses = fit_ensemble(
        [r.student for r in runs], [r.components for r in runs], data.source_train, data.target_train if runs[0].uses_target else None,
        steps=first.steps, batch_size=first.batch_size, lr=first.lr, weight_decay=first.weight_decay,
        seeds=[derive_seed(s.seed, "student-batches") for s in specs], teacher_tables=[r.tables for r in runs],
        augments=[source_augmenter(s, host.suite(s.suite).input_size) for s in specs],
        teachers=[r.teacher if any(c.needs_teacher for c in r.components) else None for r in runs],
        reveal_target_labels=runs[0].reveal_labels, backbone_lr_mult=first.backbone_lr_mult,
        checkpoints=checkpoint_steps(first.steps, first.eval_points), on_checkpoint=on_checkpoint,
        desc=f"{first.recipe} seeds {','.join(str(s.seed) for s in specs)}", show_progress=settings.show_progress,
    )
    student_s = time.perf_counter() - train_started
    timings = {"data_s": data_s, "teacher_s": sum(r.teacher_s for r in runs), "student_s": student_s,
               "total_s": time.perf_counter() - started}
    seeds = [s.seed for s in specs]
    return [_result(run, data, num_classes, losses, timings, host, settings, device, vmapped_with_seeds=seeds)
            for run, losses in zip(runs, final_losses, strict=True)]


def execute_safely(work: Callable[[], Mapping[str, Any]]) -> dict[str, Any]:
    """Call ``work`` and never raise: a failure comes back as a result with status 'failed'."""
    started = time.perf_counter()
    try:
        result = work()
    except (UserError, RunFailed) as exc:
        return {"status": "failed", "error": str(exc), "traceback": None, "timings": {"total_s": time.perf_counter() - started}}
    except Exception as exc:  # noqa: BLE001 - one broken run must never stop the grid
        return {
            "status": "failed",
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(),
            "timings": {"total_s": time.perf_counter() - started},
        }
    return {"status": "done", **result}
