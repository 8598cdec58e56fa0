"""The teacher cache: each teacher trained once per key, verified on load, shared by every run."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cdkd_bench.api import Method, MethodInfo
from cdkd_bench.augment import augmentation_from_dict, augmenter
from cdkd_bench.cache import cache_lock, is_locked, load_verified, non_finite, save_verified
from cdkd_bench.compute import check_numerics, make_deterministic, pick_device
from cdkd_bench.data import Split
from cdkd_bench.errors import UserError
from cdkd_bench.evaluation import classification_metrics, predict
from cdkd_bench.hparams import canonical_recipe
from cdkd_bench.networks import network_info
from cdkd_bench.plugins import Host
from cdkd_bench.recipes import build_recipe, view_transforms
from cdkd_bench.registry import Registry
from cdkd_bench.settings import EngineSettings
from cdkd_bench.spec import SOURCE_TEACHER, TeacherSpec, derive_seed
from cdkd_bench.task_data import load_source, load_unlabelled_target
from cdkd_bench.training import fit
from cdkd_bench.weights import planned_weights


def check_teacher_recipe(recipe: str, methods: Registry[type[Method]]) -> str:
    """The canonical teacher recipe: ``source``, or adaptation components joined by ``+`` (``dann``, ``dann+mcc``).

    Anything else is refused in one sentence: distillation components have no teacher to learn
    from at this stage, and no component may read target labels.
    """
    if recipe == SOURCE_TEACHER:
        return recipe
    canonical = canonical_recipe(recipe, methods)
    for name in canonical.split("+"):
        method = methods.get(name)
        if method.family != "adaptation" or method.needs_teacher or method.uses_target_labels:
            raise UserError(f"teacher recipe {recipe!r} names {name!r}, which is not an adaptation component (family "
                            f"{method.family!r}); a teacher is trained on source ('source') or adapted with unlabelled "
                            "target images by adaptation components, e.g. 'dann' or 'dann+mcc'")
    return canonical


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
    check_teacher_recipe(teacher.teacher_recipe, host.methods)
    check_numerics(teacher.numerics, device, settings.resolved_threads(), settings.compile)
    torch.manual_seed(derive_seed(teacher.seed, "teacher-init"))
    weights = planned_weights(settings.teacher_weights, teacher.weights, "--teacher-weights")
    model = host.architecture(teacher.arch, teacher.num_classes, teacher.pretrained, weights)
    model = model.to(device).to(memory_format=torch.channels_last)
    path = teacher_path(settings, teacher)
    metrics = _load_teacher(model, teacher, path)
    trained_now = False
    if metrics is None:
        if not wait and is_locked(path):
            raise TeacherBusy(teacher.key)
        with cache_lock(path):
            metrics = _load_teacher(model, teacher, path, report=False)  # trained meanwhile by another process?
            if metrics is None:
                metrics = _train_teacher(host, model, teacher, source_train, source_val, settings)
                save_verified(path, {"kind": "teacher", **teacher.to_dict()}, model.state_dict(), {"metrics": metrics})
                trained_now = True
    model.eval()
    model.requires_grad_(False)  # frozen: no component may update the teacher
    return model, metrics, trained_now


def _train_teacher(host: Host, model: nn.Module, teacher: TeacherSpec, source_train: Split, source_val: Split,
                   settings: EngineSettings) -> dict[str, float]:
    """Supervised on source (the recipe ``source``), or on source plus the recipe's adaptation terms on unlabelled target images."""
    started = time.perf_counter()
    device = source_train.x.device
    policy = augmentation_from_dict(teacher.augmentation)
    components: list[Method] = []
    target_train: Split | None = None
    if teacher.adapted:
        target_train = load_unlabelled_target(host, teacher, settings, device)
        components = build_recipe(host, teacher.teacher_recipe.split("+"), teacher.recipe_hparams,
                                  teacher_stage_info(model, teacher, len(source_train), len(target_train), device,
                                                     host.suite(teacher.suite).input_size), device)
    losses = fit(
        model, components, source_train, target_train if any(c.uses_target for c in components) else None,
        steps=teacher.steps, batch_size=teacher.batch_size, lr=teacher.lr, weight_decay=teacher.weight_decay,
        seed=derive_seed(teacher.seed, "teacher-batches"), backbone_lr_mult=teacher.backbone_lr_mult,
        augment=augmenter(policy, derive_seed(teacher.seed, "teacher-augment"), host.suite(teacher.suite).input_size) if policy else None,
        views=view_transforms(host.suite(teacher.suite), components, teacher.seed, "teacher-view"),
        desc=teacher.label, show_progress=settings.show_progress, compile_step=settings.compile,
    )
    if target_train is not None:
        for component in components:  # AdaBN: the cached teacher keeps the target's BatchNorm statistics
            component.before_evaluation(model, target_train.x)
    val = classification_metrics(predict(model, source_val.x), source_val.y, teacher.num_classes)
    return {"source_val.acc": val["acc"], "train_s": time.perf_counter() - started,
            **{f"train_loss.{name}": value for name, value in losses.items() if teacher.adapted}}


def teacher_stage_info(model: nn.Module, teacher: TeacherSpec, source_size: int, target_size: int, device: torch.device,
                       input_size: int) -> MethodInfo:
    """What adaptation components see while they adapt a teacher: the teacher is the network they train."""
    shape = network_info(model, teacher.arch, input_size, device)
    return MethodInfo(num_classes=teacher.num_classes, student_features=shape.num_features, teacher_features=None,
                      total_steps=teacher.steps, student=shape, teacher=None,
                      split_sizes={"source": source_size, "target": target_size}, image_size=input_size)


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


