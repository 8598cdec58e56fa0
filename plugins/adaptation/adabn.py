"""Li et al. 2016, "Revisiting Batch Normalization For Practical Domain Adaptation" (arXiv 2016).
https://arxiv.org/abs/1603.04779

AdaBN adapts a network to the target domain without training: every BatchNorm layer's running
mean and variance, estimated on source images during training, are replaced by the statistics of
its inputs on the target images. ``before_evaluation`` does this on the copy of the student that
is evaluated (and on an adapted teacher before it is cached): for each BatchNorm layer that tracks
running statistics it resets them and sets ``momentum = None`` (PyTorch's cumulative average),
runs the network without gradients over every unlabelled target image in batches, restores each
layer's momentum and leaves the network in eval mode. Only the BatchNorm layers are in train mode
during these passes; dropout and every other layer stay in eval mode, so each layer sees the
activations it sees at test time and nothing but ``running_mean``, ``running_var`` and
``num_batches_tracked`` changes. Choices: the images are visited in a fixed shuffled order (seed 0,
independent of the global random state), so no batch holds one class only when a split is stored
class by class; and they are cut into equally sized batches (sizes differ by at most one, each at
most ``batch_size``), because the cumulative average weights every batch equally: the mean of the
first BatchNorm layer is then the exact mean over the images, and a single batch (``batch_size`` at
least the number of images) gives every layer exactly its inputs' mean and unbiased variance. With
several batches the variance is the average within-batch variance, as in any BatchNorm
re-estimation. AdaBN has no loss term and does not read target batches during training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from cdkd_bench import Method, RegisterMethods, Step, hookimpl
from cdkd_bench.images import Images

BATCH_SIZES = (64, 128, 256, 512)
ORDER_SEED = 0


def batchnorm_layers(model: nn.Module) -> list[_BatchNorm]:
    """The BatchNorm layers of ``model`` that keep running statistics."""
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


def equal_batches(count: int, batch_size: int, seed: int = ORDER_SEED) -> list[torch.Tensor]:
    """A fixed shuffled order of ``range(count)`` cut into ``ceil(count / batch_size)`` batches of near-equal size."""
    if count == 0:
        return []
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    return list(order.tensor_split(math.ceil(count / batch_size)))


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, images: torch.Tensor | Images, batch_size: int) -> None:
    """Replace every BatchNorm layer's running statistics by those of its inputs on ``images``; model left in eval mode."""
    layers = batchnorm_layers(model)
    if not layers or len(images) == 0:
        model.eval()
        return
    momenta = [layer.momentum for layer in layers]
    model.eval()
    try:
        for layer in layers:
            layer.reset_running_stats()
            layer.momentum = None
            layer.train()
        for batch in equal_batches(len(images), batch_size):
            model(images[batch.to(images.device)])
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum
        model.eval()


class AdaBN(Method):
    """AdaBN: re-estimate BatchNorm statistics on the target images before evaluation."""

    name = "adabn"
    version = 1
    family = "adaptation"
    uses_target = False
    needs_teacher = False

    @dataclass(frozen=True)
    class Hparams:
        batch_size: int = field(default=256, metadata={"search": BATCH_SIZES})

        def __post_init__(self) -> None:
            if self.batch_size < 2:
                raise ValueError(f"batch_size must be at least 2 (BatchNorm needs two values per channel), got {self.batch_size}")

    def loss(self, step: Step) -> dict[str, torch.Tensor]:
        return {}

    def before_evaluation(self, student: nn.Module, target_unlabelled: torch.Tensor | Images) -> None:
        reestimate_batchnorm(student, target_unlabelled, self.hparams.batch_size)


@hookimpl
def cdkd_register_methods(register: RegisterMethods) -> None:
    register(AdaBN)
