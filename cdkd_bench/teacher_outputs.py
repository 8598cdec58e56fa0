"""The frozen teacher's plain outputs on a whole split, computed once and cached beside the teacher.

Every run of a grid that reads the same teacher on the same split (each recipe, variant
and selection of a task, and every task sharing a domain) needs the same logits and
features: the teacher is frozen and plain images never change. They are computed once per
(teacher, domain split), under the file's lock, and verified like every cache file. The
file names its split by the domain's name, version, image size and split name: what the
(verified) data cache file is keyed by, with the fixed source-val split on top.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cdkd_bench.api import Outputs
from cdkd_bench.cache import cache_lock, load_verified, non_finite, save_verified
from cdkd_bench.data import Split
from cdkd_bench.settings import EngineSettings
from cdkd_bench.spec import TeacherSpec
from cdkd_bench.training import predict_outputs


@dataclass(frozen=True)
class SplitName:
    """Which images a split holds: ``split`` is ``source_train`` (train minus the fixed val), ``train`` or ``test``."""

    domain: str
    version: int | str
    image_size: int
    split: str


def outputs_path(settings: EngineSettings, teacher: TeacherSpec, name: SplitName) -> Path:
    return settings.cache_dir / "teachers" / f"{teacher.key}-outputs-{name.domain}-{name.split}.pt"


def cached_teacher_outputs(settings: EngineSettings, teacher_spec: TeacherSpec, teacher: nn.Module, name: SplitName, split: Split) -> Outputs:
    """The teacher's float32 logits and features for every image of ``split``, from the cache or computed once."""
    path = outputs_path(settings, teacher_spec, name)
    identity = {"kind": "teacher-outputs", "teacher": teacher_spec.to_dict(), **asdict(name), "images": len(split)}

    def usable(tensors: dict[str, torch.Tensor], extra: dict[str, Any]) -> str | None:
        logits, features = tensors.get("logits"), tensors.get("features")
        if logits is None or features is None or len(logits) != len(split) or len(features) != len(split):
            return f"does not hold outputs for the split's {len(split)} images"
        if logits.shape[1] != teacher_spec.num_classes or not isinstance(extra.get("num_stages"), int):
            return "is malformed"
        return non_finite(tensors)

    cached = load_verified(path, identity, usable)
    if cached is None:
        with cache_lock(path):
            cached = load_verified(path, identity, usable, report=False)  # computed meanwhile by another process?
            if cached is None:
                computed = predict_outputs(teacher, split.x)
                save_verified(path, identity, {"logits": computed.logits, "features": computed.features},
                              {"num_stages": computed.num_stages})
                return computed
    tensors, extra = cached
    device = split.x.device
    return Outputs(logits=tensors["logits"].to(device), features=tensors["features"].to(device), num_stages=extra["num_stages"])
