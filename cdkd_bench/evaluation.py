"""Evaluating a student at a checkpoint: every number a selection rule or a table may need."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from cdkd_bench.api import Method
from cdkd_bench.data import Split
from cdkd_bench.images import Images, first
from cdkd_bench.training import predict_outputs

LABEL_FREE_IMAGES = 1024
"""Label-free scores are estimated on this many target train images (the same ones at every checkpoint):
an estimate is enough to rank checkpoints, and evaluating whole large splits at every checkpoint is not free."""


def predict(model: nn.Module, x: torch.Tensor | Images) -> torch.Tensor:
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


SND_TEMPERATURE = 0.05
"""The softmax temperature of soft neighbourhood density (Saito et al. 2021, section 3.2)."""


def label_free_scores(logits: torch.Tensor) -> dict[str, float]:
    """What label-free selection rules read on unlabelled target data (all from the predicted probabilities).

    ``entropy``: mean prediction entropy (lower is more confident). ``info_max``: the
    information-maximisation score of SHOT (Liang et al. 2020), entropy of the mean
    prediction minus the mean entropy (higher is better). ``snd``: soft neighbourhood
    density (Saito et al. 2021, "Tune it the right way"): the L2-normalised probability
    vectors' cosine similarities to every *other* image, softmaxed at temperature 0.05 per
    image; the mean entropy of those neighbour distributions (higher is better: dense,
    consistent neighbourhoods). ``bnm``: the nuclear norm of the probability matrix divided by
    the number of images, the batch nuclear-norm validator of Musgrave et al. 2022 ("Three
    new validators…"; higher is better: confident and diverse predictions).
    """
    p = logits.float().softmax(dim=1)
    entropy = -(p * p.clamp_min(1e-12).log()).sum(dim=1).mean()
    mean = p.mean(dim=0)
    diversity = -(mean * mean.clamp_min(1e-12).log()).sum()
    return {"entropy": float(entropy), "info_max": float(diversity - entropy), "snd": soft_neighbourhood_density(p),
            "bnm": float(torch.linalg.matrix_norm(p, ord="nuc") / len(p))}


def soft_neighbourhood_density(probabilities: torch.Tensor, temperature: float = SND_TEMPERATURE) -> float:
    """SND of Saito et al. 2021 on an (N, C) probability matrix; needs at least 2 images."""
    n = len(probabilities)
    if n < 2:
        return float("nan")
    unit = torch.nn.functional.normalize(probabilities, dim=1)
    similarity = unit @ unit.T
    others = similarity[~torch.eye(n, dtype=torch.bool, device=similarity.device)].view(n, n - 1)  # an image is not its own neighbour
    neighbours = (others / temperature).softmax(dim=1)
    return float(-(neighbours * neighbours.clamp_min(1e-30).log()).sum(dim=1).mean())


def evaluate_checkpoint(
    student: nn.Module,
    components: Sequence[Method],
    step: int,
    source_val: Split,
    target_train: Split,
    target_test: Split,
    teacher_target_predictions: torch.Tensor,
    num_classes: int,
    target_val: Split | None = None,
) -> dict[str, Any]:
    """The student's metrics at ``step`` (after each component's ``before_evaluation``, on a copy).

    Target test labels are read here only to report; which checkpoint counts is decided
    later by a selection rule, over every stored checkpoint. ``target_val``: the labelled target
    validation images of an ``ssda-K`` regime (scored as ``target_val.acc``, never trained on).
    """
    evaluated = student
    if any(type(c).before_evaluation is not Method.before_evaluation for c in components):
        evaluated = copy.deepcopy(student)  # the hook may change BatchNorm statistics; training goes on unchanged
        for component in components:
            component.before_evaluation(evaluated, target_train.x)
    target = predict_outputs(evaluated, target_test.x).logits.argmax(dim=1)
    test = classification_metrics(target, target_test.y, num_classes)
    unlabelled = label_free_scores(predict_outputs(evaluated, first(target_train.x, LABEL_FREE_IMAGES)).logits)
    metrics = {
        "step": step,
        "source_val.acc": classification_metrics(predict(evaluated, source_val.x), source_val.y, num_classes)["acc"],
        "target_test.acc": test["acc"],
        "target_test.balanced_acc": test["balanced_acc"],
        "target_test.per_class_acc": test["per_class_acc"],
        "teacher_student_agreement": float((target == teacher_target_predictions).float().mean() * 100),
        "target_train.entropy": unlabelled["entropy"],
        "target_train.info_max": unlabelled["info_max"],
        "target_train.snd": unlabelled["snd"],
        "target_train.bnm": unlabelled["bnm"],
    }
    if target_val is not None:
        metrics["target_val.acc"] = classification_metrics(predict(evaluated, target_val.x), target_val.y, num_classes)["acc"]
    return metrics


def checkpoint_steps(total_steps: int, points: int) -> list[int]:
    """``points`` evenly spaced step counts ending at ``total_steps`` (at least the last)."""
    points = max(1, min(points, total_steps))
    return sorted({round(total_steps * (i + 1) / points) for i in range(points)})
