"""Trains and evaluates ONE run: data, the (cached) teacher, the student, the metrics."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cdkd_bench.api import MethodInfo
from cdkd_bench.augment import augmentation_from_dict, augmenter
from cdkd_bench.cache import cache_lock, is_locked, load_verified, non_finite, save_verified
from cdkd_bench.compute import default_threads, make_deterministic, numerics, pick_device, use_threads
from cdkd_bench.data import Split, load_domain, to_input, validation_split
from cdkd_bench.errors import UserError
from cdkd_bench.hparams import build_hparams
from cdkd_bench.plugins import Host
from cdkd_bench.provenance import provenance
from cdkd_bench.spec import RunSpec, TeacherSpec, derive_seed
from cdkd_bench.training import RunFailed, classification_metrics, feature_size, fit, predict

SUPPORTED_TEACHER_RECIPES = ("source",)


def check_teacher_recipe(name: str) -> None:
    """Reject teacher recipes the engine cannot train (checked when a grid expands, and again per run)."""
    if name not in SUPPORTED_TEACHER_RECIPES:
        raise UserError(f"teacher recipe {name!r} is not supported yet; use one of {', '.join(SUPPORTED_TEACHER_RECIPES)}")


@dataclass(frozen=True)
class EngineSettings:
    """Where runs keep their caches and what they run on; not part of any run's identity."""

    cache_dir: Path
    data_root: Path | None = None
    device: str = "auto"
    threads: int | None = None
    """CPU threads per run; None: ``CDKD_BENCH_THREADS`` or every core (see compute.default_threads)."""
    show_progress: bool = False

    def resolved_threads(self) -> int:
        return self.threads if self.threads is not None else default_threads()


class TeacherBusy(Exception):
    """Another process is training this teacher right now (raised only when asked not to wait)."""


@dataclass
class TaskData:
    source_train: Split
    source_val: Split
    target_train: Split
    target_test: Split


def _split(x: torch.Tensor, y: torch.Tensor, device: torch.device) -> Split:
    return Split(to_input(x.to(device)), y.to(device))


def load_source(host: Host, suite_name: str, source: str, settings: EngineSettings, device: torch.device) -> tuple[Split, Split]:
    """The source domain's (train, val) splits; val is a fixed stratified tenth of its train split."""
    suite = host.suite(suite_name)
    data = load_domain(host.domains.get(source), suite.image_size, settings.cache_dir, settings.data_root)
    train_idx, val_idx = validation_split(data.train_y, source)
    return (
        _split(data.train_x[train_idx], data.train_y[train_idx], device),
        _split(data.train_x[val_idx], data.train_y[val_idx], device),
    )


def load_task_data(host: Host, spec: RunSpec, settings: EngineSettings, device: torch.device) -> TaskData:
    suite = host.suite(spec.suite)
    source_train, source_val = load_source(host, spec.suite, spec.source, settings, device)
    target = load_domain(host.domains.get(spec.target), suite.image_size, settings.cache_dir, settings.data_root)
    return TaskData(
        source_train=source_train,
        source_val=source_val,
        target_train=_split(target.train_x, target.train_y, device),
        target_test=_split(target.test_x, target.test_y, device),
    )


def teacher_path(settings: EngineSettings, teacher: TeacherSpec) -> Path:
    return settings.cache_dir / "teachers" / f"{teacher.key}.pt"


def _check_numerics(planned: str, device: torch.device, settings: EngineSettings) -> None:
    """Refuse to compute a run or teacher with other numerics than its identity says."""
    actual = numerics(device, settings.resolved_threads())
    if actual != planned:
        raise UserError(f"this work was planned for {planned!r} but would run as {actual!r}; run the grid again with matching settings")
    use_threads(device, settings.resolved_threads())


def _load_teacher(model: nn.Module, teacher: TeacherSpec, path: Path, report: bool = True) -> dict[str, float] | None:
    """Load the cached teacher into ``model`` if the file is exactly this teacher; its metrics, or None."""
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}

    def usable(tensors: dict[str, torch.Tensor], extra: dict[str, Any]) -> str | None:
        if {name: tuple(t.shape) for name, t in tensors.items()} != expected:
            return f"does not fit architecture {teacher.arch!r}"
        metrics = extra.get("metrics")
        if not isinstance(metrics, dict) or not isinstance(metrics.get("source_val.acc"), float):
            return "is malformed (no source-val accuracy)"
        return non_finite(tensors)

    cached = load_verified(path, {"kind": "teacher", **teacher.to_dict()}, usable, report=report)
    if cached is None:
        return None
    model.load_state_dict(cached[0])
    return dict(cached[1]["metrics"])


def obtain_teacher(
    host: Host, teacher: TeacherSpec, source_train: Split, source_val: Split, settings: EngineSettings, device: torch.device,
    wait: bool = True,
) -> tuple[nn.Module, dict[str, float], bool]:
    """The frozen teacher for ``teacher``: loaded from the cache, or trained once and cached.

    Training happens under the key's lock, so concurrent processes train a teacher once and
    the others load it; with ``wait=False`` a teacher being trained elsewhere raises
    :class:`TeacherBusy` instead of waiting. Returns (model, its source-stage metrics,
    whether it was trained now).
    """
    check_teacher_recipe(teacher.teacher_recipe)
    _check_numerics(teacher.numerics, device, settings)
    torch.manual_seed(derive_seed(teacher.seed, "teacher-init"))
    model = host.architecture(teacher.arch, teacher.num_classes, teacher.pretrained).to(device)
    path = teacher_path(settings, teacher)
    metrics = _load_teacher(model, teacher, path)
    trained_now = False
    if metrics is None:
        if not wait and is_locked(path):
            raise TeacherBusy(teacher.key)
        with cache_lock(path):
            metrics = _load_teacher(model, teacher, path, report=False)  # trained meanwhile by another process?
            if metrics is None:
                metrics = _train_teacher(model, teacher, source_train, source_val, settings)
                save_verified(path, {"kind": "teacher", **teacher.to_dict()}, model.state_dict(), {"metrics": metrics})
                trained_now = True
    model.eval()
    model.requires_grad_(False)  # frozen: no component may update the teacher
    return model, metrics, trained_now


def _train_teacher(model: nn.Module, teacher: TeacherSpec, source_train: Split, source_val: Split, settings: EngineSettings) -> dict[str, float]:
    started = time.perf_counter()
    policy = augmentation_from_dict(teacher.augmentation)
    fit(
        model, [], source_train, None,
        steps=teacher.steps, batch_size=teacher.batch_size, lr=teacher.lr, weight_decay=teacher.weight_decay,
        seed=derive_seed(teacher.seed, "teacher-batches"),
        augment=augmenter(policy, derive_seed(teacher.seed, "teacher-augment")) if policy else None,
        desc=f"teacher {teacher.arch} on {teacher.source}", show_progress=settings.show_progress,
    )
    val = classification_metrics(predict(model, source_val.x), source_val.y, teacher.num_classes)
    return {"source_val.acc": val["acc"], "train_s": time.perf_counter() - started}


def execute(spec: RunSpec, host: Host, settings: EngineSettings) -> dict[str, Any]:
    """Run one spec end to end and return its metrics, timings and provenance (raises on failure)."""
    started = time.perf_counter()
    device = pick_device(settings.device)
    _check_numerics(spec.numerics, device, settings)
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
    student = host.architecture(spec.student_arch, num_classes, False).to(device)
    info = MethodInfo(
        num_classes=num_classes,
        student_features=feature_size(student, suite.image_size, device),
        teacher_features=feature_size(teacher, suite.image_size, device),
        total_steps=spec.steps,
    )
    components = []
    for name in spec.components:
        method = host.methods.get(name)
        components.append(method(build_hparams(method, spec.hparams.get(name, {})), info).to(device))
    needs_teacher = any(c.needs_teacher for c in components)
    uses_target = any(c.uses_target for c in components)
    reveal_labels = any(c.uses_target_labels for c in components)

    train_started = time.perf_counter()
    final_losses = fit(
        student, components, data.source_train, data.target_train if uses_target else None,
        steps=spec.steps, batch_size=spec.batch_size, lr=spec.lr, weight_decay=spec.weight_decay,
        seed=derive_seed(spec.seed, "student-batches"),
        teacher=teacher if needs_teacher else None,
        reveal_target_labels=reveal_labels,
        desc=f"{spec.recipe} seed {spec.seed}", show_progress=settings.show_progress,
    )
    student_s = time.perf_counter() - train_started

    selector = host.selectors.get(spec.selection)
    student_target = predict(student, data.target_test.x)
    teacher_target = predict(teacher, data.target_test.x)
    source_val_acc = classification_metrics(predict(student, data.source_val.x), data.source_val.y, num_classes)["acc"]
    checkpoints: list[Mapping[str, float]] = [{"source_val.acc": source_val_acc}]
    chosen = selector.choose(checkpoints)  # only the final checkpoint is evaluated so far
    target_metrics = classification_metrics(student_target, data.target_test.y, num_classes)
    teacher_target_metrics = classification_metrics(teacher_target, data.target_test.y, num_classes)
    metrics: dict[str, Any] = {
        "target_test.acc": target_metrics["acc"],
        "target_test.balanced_acc": target_metrics["balanced_acc"],
        "target_test.per_class_acc": target_metrics["per_class_acc"],
        "source_val.acc": checkpoints[chosen]["source_val.acc"],
        "teacher.target_test.acc": teacher_target_metrics["acc"],
        "teacher.target_test.balanced_acc": teacher_target_metrics["balanced_acc"],
        "teacher.source_val.acc": teacher_metrics["source_val.acc"],
        "teacher_student_agreement": float((student_target == teacher_target).float().mean() * 100),
        "student.params": sum(p.numel() for p in student.parameters()),
        "teacher.params": sum(p.numel() for p in teacher.parameters()),
        "selected_checkpoint": chosen,
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
        "provenance": provenance(device, plugin_versions),
    }


def prepare_teacher(teacher: TeacherSpec, host: Host, settings: EngineSettings, wait: bool = True) -> dict[str, Any]:
    """Make sure the teacher is in the cache (train it if not); returns its source-stage metrics.

    With ``wait=False`` a teacher that another process is training comes back as
    ``{"busy": True}`` at once, so the caller can do other work first.
    """
    device = pick_device(settings.device)
    make_deterministic()
    source_train, source_val = load_source(host, teacher.suite, teacher.source, settings, device)
    try:
        _, metrics, trained = obtain_teacher(host, teacher, source_train, source_val, settings, device, wait=wait)
    except TeacherBusy:
        return {"busy": True, "metrics": {}, "teacher_trained": False}
    return {"busy": False, "metrics": metrics, "teacher_trained": trained}


def execute_safely(work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
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
