"""The optimisation loop and the evaluation of one network; shared by teacher and student stages."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from cdkd_bench.api import Batch, DomainRole, Method, Outputs, Step
from cdkd_bench.data import BatchStream, Split

FINITE_CHECK_EVERY = 25


def progress_disabled(show_progress: bool) -> bool | None:
    """tqdm's ``disable``: None draws bars only on a terminal, so logs and pipes stay readable."""
    return None if show_progress else True


class RunFailed(Exception):
    """Training could not go on (a non-finite loss, say); the run is stored as failed."""


def forward_outputs(model: Any, x: torch.Tensor) -> Outputs:
    """Logits and pooled pre-logit features from one pass through a timm-style model."""
    features = model.forward_head(model.forward_features(x), pre_logits=True)
    return Outputs(logits=model.get_classifier()(features), features=features)


def feature_size(model: nn.Module, image_size: int, device: torch.device) -> int:
    was_training = model.training
    model.eval()
    with torch.no_grad():
        size = forward_outputs(model, torch.zeros(1, 3, image_size, image_size, device=device)).features.shape[1]
    model.train(was_training)
    return int(size)


def autocast_for(device: torch.device) -> contextlib.AbstractContextManager[None]:
    """bfloat16 autocast on CUDA (fast, no loss scaling needed); plain float32 on the CPU."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def cosine_schedule(total_steps: int) -> Callable[[int], float]:
    return lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))


def fit(
    model: nn.Module,
    components: Sequence[Method],
    source: Split,
    target: Split | None,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    seed: int,
    teacher: nn.Module | None = None,
    reveal_target_labels: bool = False,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    desc: str = "train",
    show_progress: bool = False,
) -> dict[str, float]:
    """Train ``model`` (and the components' own modules) for ``steps`` steps.

    The loss is cross-entropy on the labelled source batch plus every component's terms.
    ``augment`` transforms source batches; it cannot be combined with a teacher, whose
    outputs are precomputed for the unaugmented images.
    Returns each loss term averaged over the last tenth of training.
    """
    if augment is not None and teacher is not None:
        raise ValueError("augmentation and a teacher cannot be combined: teacher outputs are precomputed per image")
    device = source.x.device
    params = [*model.parameters(), *(p for c in components for p in c.parameters())]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_schedule(steps))
    source_batches = BatchStream(source, batch_size, seed)
    target_batches = BatchStream(target, batch_size, seed + 1) if target is not None else None
    empty = Batch(source.x[:0], None)
    student_forward = partial(forward_outputs, model)
    # The teacher is frozen, in eval mode, and images are not augmented, so its outputs
    # for an image never change: compute them once per split instead of once per step.
    splits = {"source": source, "target": target}
    teacher_table = {
        role: predict_outputs(teacher, split.x) for role, split in splits.items() if split is not None
    } if teacher is not None else {}
    batch_indices: dict[str, torch.Tensor] = {}

    def teacher_outputs(role: DomainRole) -> Outputs:
        table, idx = teacher_table[role], batch_indices[role]
        return Outputs(logits=table.logits[idx], features=table.features[idx])

    model.train()
    for component in components:
        component.train()
    tail_start = steps - max(1, steps // 10)
    tail_sums: dict[str, Any] = {}  # device tensors, read back once at the end
    for index in tqdm(range(steps), desc=desc, leave=False, disable=progress_disabled(show_progress), mininterval=0.5):
        xs, ys, batch_indices["source"] = source_batches.next()
        if augment is not None:
            xs = augment(xs)
        target_batch = empty
        if target_batches is not None:
            xt, yt, batch_indices["target"] = target_batches.next()
            target_batch = Batch(xt, yt if reveal_target_labels else None)
        step = Step(Batch(xs, ys), target_batch, index / steps, student_forward,
                    teacher_outputs if teacher is not None else None)
        with autocast_for(device):
            terms = {"source_ce": F.cross_entropy(step.student("source").logits, ys)}
            for component in components:
                for name, value in component.loss(step).items():
                    terms[f"{component.name}.{name}"] = value
        loss = torch.stack([v.float() for v in terms.values()]).sum()
        # Checking finiteness reads the loss back from the device, a sync that stalls a GPU:
        # do it every few steps; a non-finite loss poisons the weights, so it is still caught.
        if (index % FINITE_CHECK_EVERY == 0 or index == steps - 1) and not torch.isfinite(loss):
            values = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items())
            raise RunFailed(f"the loss became {float(loss.detach())} by step {index} ({values})")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if index >= tail_start:
            for name, value in terms.items():
                tail_sums[name] = tail_sums.get(name, 0.0) + value.detach().float()
    optimizer.zero_grad(set_to_none=True)  # leave no stale gradients on a model that is frozen next
    count = steps - tail_start
    return {name: float(total) / count for name, total in tail_sums.items()}


@torch.no_grad()
def predict_outputs(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> Outputs:
    """Float32 logits and features for every image, in eval mode."""
    was_training = model.training
    model.eval()
    logits, features = [], []
    for start in range(0, len(x), batch_size):
        with autocast_for(x.device):
            out = forward_outputs(model, x[start : start + batch_size])
        logits.append(out.logits.float())
        features.append(out.features.float())
    model.train(was_training)
    return Outputs(logits=torch.cat(logits), features=torch.cat(features))


def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Predicted classes for every image, in eval mode."""
    return predict_outputs(model, x).logits.argmax(dim=1)


def classification_metrics(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict[str, Any]:
    """Top-1 accuracy, balanced accuracy (mean recall over classes present) and per-class accuracy, in %."""
    correct = (predictions == labels).float()
    per_class: list[float | None] = []
    for label in range(num_classes):
        mask = labels == label
        per_class.append(float(correct[mask].mean() * 100) if mask.any() else None)
    present = [a for a in per_class if a is not None]
    return {
        "acc": float(correct.mean() * 100),
        "balanced_acc": sum(present) / len(present),
        "per_class_acc": per_class,
    }
