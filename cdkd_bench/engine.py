"""Trains and evaluates ONE student run: its data, its (cached) teacher, its components, its checkpoints."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from cdkd_bench.api import DomainRole, Method, MethodInfo, Outputs
from cdkd_bench.augment import augmenter
from cdkd_bench.compute import check_numerics, make_deterministic, pick_device
from cdkd_bench.data import Split
from cdkd_bench.errors import UserError
from cdkd_bench.evaluation import checkpoint_steps, classification_metrics, evaluate_checkpoint
from cdkd_bench.hparams import build_hparams
from cdkd_bench.networks import network_info
from cdkd_bench.plugins import Host
from cdkd_bench.provenance import provenance
from cdkd_bench.settings import EngineSettings
from cdkd_bench.spec import RunSpec, derive_seed
from cdkd_bench.task_data import TaskData, load_task_data
from cdkd_bench.teacher_outputs import SplitName, cached_teacher_outputs
from cdkd_bench.teachers import obtain_teacher
from cdkd_bench.training import RunFailed, fit

__all__ = ["EngineSettings", "build_components", "execute", "execute_safely"]


def build_components(host: Host, spec: RunSpec, info: MethodInfo, device: torch.device) -> list[Method]:
    components = []
    for name in spec.components:
        method = host.methods.get(name)
        components.append(method(build_hparams(method, spec.hparams.get(name, {})), info).to(device))
    return components


def _method_info(spec: RunSpec, student: nn.Module, teacher: nn.Module, data: TaskData, image_size: int, num_classes: int,
                 device: torch.device) -> MethodInfo:
    student_info = network_info(student, spec.student_arch, image_size, device)
    teacher_info = network_info(teacher, spec.teacher.arch, image_size, device)
    return MethodInfo(
        num_classes=num_classes, student_features=student_info.num_features, teacher_features=teacher_info.num_features,
        total_steps=spec.steps, student=student_info, teacher=teacher_info,
        split_sizes={"source": len(data.source_train), "target": len(data.target_train)}, image_size=image_size,
    )


def _view_transforms(host: Host, spec: RunSpec, components: list[Method]) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """The suite's augmentation for every view some component reads, each with its own seeded generator."""
    suite = host.suite(spec.suite)
    wanted = sorted({view for c in components for views in c.views.values() for view in views})
    return {view: augmenter(suite.views[view], derive_seed(spec.seed, f"view-{view}")) for view in wanted}


def execute(spec: RunSpec, host: Host, settings: EngineSettings) -> dict[str, Any]:
    """Run one spec end to end and return its metrics, checkpoints, timings and provenance (raises on failure)."""
    started = time.perf_counter()
    device = pick_device(settings.device)
    check_numerics(spec.numerics, device, settings.resolved_threads(), settings.compile)
    make_deterministic()
    torch.manual_seed(derive_seed(spec.seed, "run"))
    suite = host.suite(spec.suite)
    num_classes = suite.num_classes
    data = load_task_data(host, spec, settings, device)
    data_s = time.perf_counter() - started

    teacher, teacher_metrics, teacher_trained = obtain_teacher(host, spec.teacher, data.source_train, data.source_val, settings, device)
    teacher_s = time.perf_counter() - started - data_s

    # The same initial student for every recipe of a (task, seed): comparisons are paired.
    torch.manual_seed(derive_seed(spec.seed, "student-init"))
    student = host.architecture(spec.student_arch, num_classes, False).to(device).to(memory_format=torch.channels_last)
    info = _method_info(spec, student, teacher, data, suite.image_size, num_classes, device)
    components = build_components(host, spec, info, device)
    needs_teacher = any(c.needs_teacher for c in components)
    uses_target = any(c.uses_target for c in components)
    reveal_labels = any(c.uses_target_labels for c in components)

    def teacher_table(domain: str, split: str, images: Split) -> Outputs:
        name = SplitName(domain, host.domains.get(domain).version, suite.image_size, split)
        return cached_teacher_outputs(settings, spec.teacher, teacher, name, images)

    teacher_target = teacher_table(spec.target, "test", data.target_test).logits.argmax(dim=1)
    tables: dict[DomainRole, Outputs] | None = None
    if needs_teacher and not any(c.intermediates for c in components):  # else the teacher runs per step anyway
        tables = {"source": teacher_table(spec.source, "source_train", data.source_train)}
        if uses_target:
            tables["target"] = teacher_table(spec.target, "train", data.target_train)
    history: list[dict[str, Any]] = []

    def on_checkpoint(step: int) -> None:
        history.append(evaluate_checkpoint(student, components, step, data.source_val, data.target_train, data.target_test,
                                           teacher_target, num_classes))

    train_started = time.perf_counter()
    final_losses = fit(
        student, components, data.source_train, data.target_train if uses_target else None,
        steps=spec.steps, batch_size=spec.batch_size, lr=spec.lr, weight_decay=spec.weight_decay,
        seed=derive_seed(spec.seed, "student-batches"),
        teacher=teacher if needs_teacher else None,
        teacher_tables=tables,
        reveal_target_labels=reveal_labels,
        views=_view_transforms(host, spec, components),
        backbone_lr_mult=spec.backbone_lr_mult,
        checkpoints=checkpoint_steps(spec.steps, spec.eval_points), on_checkpoint=on_checkpoint,
        desc=f"{spec.recipe} seed {spec.seed}", show_progress=settings.show_progress, compile_step=settings.compile,
    )
    student_s = time.perf_counter() - train_started

    teacher_target_metrics = classification_metrics(teacher_target, data.target_test.y, num_classes)
    # The run's headline numbers are its last checkpoint; selection rules choose among all of them later.
    metrics: dict[str, Any] = {
        **{k: v for k, v in history[-1].items() if k != "step"},
        "teacher.target_test.acc": teacher_target_metrics["acc"],
        "teacher.target_test.balanced_acc": teacher_target_metrics["balanced_acc"],
        "teacher.source_val.acc": teacher_metrics["source_val.acc"],
        "student.params": sum(p.numel() for p in student.parameters()),
        "teacher.params": sum(p.numel() for p in teacher.parameters()),
        "checkpoints": history,
        **{f"train_loss.{k}": v for k, v in final_losses.items()},
    }
    timings = {
        "data_s": data_s,
        "teacher_s": teacher_s,
        "teacher_train_s": teacher_metrics.get("train_s", 0.0) if teacher_trained else 0.0,
        "student_s": student_s,
        "total_s": time.perf_counter() - started,
    }
    plugin_versions = {p.name: p.version for p in host.plugins if not p.error}
    return {
        "metrics": metrics,
        "timings": timings,
        "teacher_trained": teacher_trained,
        "teacher_key": spec.teacher.key,
        "provenance": provenance(device, plugin_versions, settings.command),
    }


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
