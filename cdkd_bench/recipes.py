"""Building a recipe's components for one training stage (a student run, or an adapted teacher's training)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from cdkd_bench.api import Method, MethodInfo, Suite
from cdkd_bench.augment import augmenter
from cdkd_bench.hparams import build_hparams
from cdkd_bench.plugins import Host
from cdkd_bench.spec import derive_seed


def build_recipe(host: Host, components: Sequence[str], hparams: Mapping[str, Mapping[str, Any]], info: MethodInfo,
                 device: torch.device) -> list[Method]:
    """Each named component built with its stored hparams (validated again) and moved to ``device``."""
    built = []
    for name in components:
        method = host.methods.get(name)
        built.append(method(build_hparams(method, hparams.get(name, {})), info).to(device))
    return built


def view_transforms(suite: Suite, components: Sequence[Method], seed: int,
                    purpose: str = "view") -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """The suite's augmentation for every view some component reads, each with its own generator seeded from ``seed``."""
    wanted = sorted({view for c in components for views in c.views.values() for view in views})
    return {view: augmenter(suite.views[view], derive_seed(seed, f"{purpose}-{view}"), suite.input_size) for view in wanted}


def reads_target_images(method: type[Method]) -> bool:
    """Whether a component needs unlabelled target images: target batches, target views, or a hook before evaluation."""
    return bool(method.uses_target or method.views.get("target") or method.before_evaluation is not Method.before_evaluation)
