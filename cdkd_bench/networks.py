"""The timm interface the engine relies on: outputs with intermediate maps, and a network's shape."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from cdkd_bench.api import NetworkInfo, Outputs, StageInfo


def stage_count(model: Any) -> int:
    """How many stages ``forward_intermediates`` can return (timm's ``feature_info`` entries)."""
    info = getattr(model, "feature_info", None)
    return len(info) if isinstance(info, list | tuple) else 0


def forward_outputs(model: Any, x: torch.Tensor, stages: Sequence[int] = ()) -> Outputs:
    """Logits, pooled pre-logit features and, when ``stages`` are asked for, their NCHW maps, in one pass."""
    if not stages:
        features = model.forward_head(model.forward_features(x), pre_logits=True)
        return Outputs(logits=model.get_classifier()(features), features=features, num_stages=stage_count(model))
    count = stage_count(model)
    wanted = sorted({s + count if s < 0 else s for s in stages})
    final, maps = model.forward_intermediates(x, indices=wanted, output_fmt="NCHW")
    features = model.forward_head(final, pre_logits=True)
    return Outputs(
        logits=model.get_classifier()(features), features=features,
        intermediates=dict(zip(wanted, maps, strict=True)), num_stages=count,
    )


def supports_intermediates(model: Any) -> bool:
    return callable(getattr(model, "forward_intermediates", None)) and stage_count(model) > 0


def network_info(model: nn.Module, arch: str, image_size: int, device: torch.device) -> NetworkInfo:
    """Pooled feature size (from a dummy pass) and per-stage channels and reduction (from ``feature_info``)."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        num_features = forward_outputs(model, torch.zeros(1, 3, image_size, image_size, device=device)).features.shape[1]
    model.train(was_training)
    stages = tuple(
        StageInfo(channels=int(f["num_chs"]), reduction=int(f["reduction"]), module=str(f.get("module", "")))
        for f in getattr(model, "feature_info", None) or ()
    )
    return NetworkInfo(arch=arch, num_features=int(num_features), stages=stages)
