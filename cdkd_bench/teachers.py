"""The teacher cache: each teacher trained once per key, verified on load, shared by every run."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cdkd_bench.augment import augmentation_from_dict, augmenter
from cdkd_bench.cache import cache_lock, is_locked, load_verified, non_finite, save_verified
from cdkd_bench.compute import check_numerics, make_deterministic, pick_device
from cdkd_bench.data import Split
from cdkd_bench.errors import UserError
from cdkd_bench.evaluation import classification_metrics, predict
from cdkd_bench.plugins import Host
from cdkd_bench.settings import EngineSettings
from cdkd_bench.spec import TeacherSpec, derive_seed
from cdkd_bench.task_data import load_source
from cdkd_bench.training import fit

SUPPORTED_TEACHER_RECIPES = ("source",)


def check_teacher_recipe(name: str) -> None:
    """Reject teacher recipes the engine cannot train (checked when a grid expands, and again per run)."""
    if name not in SUPPORTED_TEACHER_RECIPES:
        raise UserError(f"teacher recipe {name!r} is not supported yet; use one of {', '.join(SUPPORTED_TEACHER_RECIPES)}")


class TeacherBusy(Exception):
    """Another process is training this teacher right now (raised only when asked not to wait)."""


def teacher_path(settings: EngineSettings, teacher: TeacherSpec) -> Path:
    return settings.cache_dir / "teachers" / f"{teacher.key}.pt"


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
    check_numerics(teacher.numerics, device, settings.resolved_threads(), settings.compile)
    torch.manual_seed(derive_seed(teacher.seed, "teacher-init"))
    model = host.architecture(teacher.arch, teacher.num_classes, teacher.pretrained).to(device).to(memory_format=torch.channels_last)
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
        desc=f"teacher {teacher.arch} on {teacher.source}", show_progress=settings.show_progress, compile_step=settings.compile,
    )
    val = classification_metrics(predict(model, source_val.x), source_val.y, teacher.num_classes)
    return {"source_val.acc": val["acc"], "train_s": time.perf_counter() - started}


def prepare_teacher(teacher: TeacherSpec, host: Host, settings: EngineSettings, wait: bool = True) -> dict[str, Any]:
    """Make sure the teacher is in the cache (train it if not); returns its source-stage metrics.

    With ``wait=False`` a teacher that another process is training comes back as
    ``{"busy": True}`` at once, so the caller can do other work first.
    """
    device = pick_device(settings.device)
    make_deterministic()
    source_train, source_val = load_source(host, teacher.suite, teacher.source, settings, device, teacher.source_data)
    try:
        _, metrics, trained = obtain_teacher(host, teacher, source_train, source_val, settings, device, wait=wait)
    except TeacherBusy:
        return {"busy": True, "metrics": {}, "teacher_trained": False}
    return {"busy": False, "metrics": metrics, "teacher_trained": trained}


