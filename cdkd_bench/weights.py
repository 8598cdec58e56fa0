"""Pretrained weights from a local file (``--teacher-weights`` / ``--student-weights``): offline, checked, identified by content."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cdkd_bench.errors import UserError


def weights_hash(path: Path) -> str:
    """The file's identity in run and teacher specs (its name and place do not matter, its bytes do)."""
    sha = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                sha.update(block)
    except OSError as exc:
        raise UserError(f"cannot read the weights file {str(path)!r} ({exc.strerror or exc})") from None
    return sha.hexdigest()[:16]


def _state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        state: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated, pickled code, not torch: all "not a weights file"
        raise UserError(f"{str(path)!r} is not a weights file torch can load safely ({type(exc).__name__}); "
                        "give a state dict saved with torch.save (or timm's .pth / .bin)") from None
    for key in ("state_dict", "model", "state_dict_ema"):  # common checkpoint wrappers
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{str(path)!r} does not hold a state dict (a mapping of parameter names to tensors)")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_weights(model: nn.Module, path: Path, arch: str) -> None:
    """Load ``path`` into ``model``; a classifier of another class count is left freshly initialised
    (ImageNet's 1,000-way head does not fit 31 classes), anything else that does not fit is an error."""
    state = _state_dict(path)
    own = model.state_dict()
    classifier = getattr(model, "get_classifier", None)
    head = {f"{name}.{p}" for name, module in model.named_modules() if callable(classifier) and module is classifier()
            for p, _ in module.named_parameters()}
    kept = {k: v for k, v in state.items() if not (k in head and k in own and v.shape != own[k].shape)}
    wrong = [k for k, v in kept.items() if k in own and v.shape != own[k].shape]
    if wrong:
        raise UserError(f"the weights in {str(path)!r} do not fit architecture {arch!r}: {wrong[0]} has shape "
                        f"{tuple(kept[wrong[0]].shape)} where the model has {tuple(own[wrong[0]].shape)}")
    missing, unexpected = model.load_state_dict(kept, strict=False)
    missing = [k for k in missing if k not in head]
    if missing or unexpected:
        what = f"missing {', '.join(missing[:3])}" if missing else f"unknown {', '.join(unexpected[:3])}"
        raise UserError(f"the weights in {str(path)!r} are not those of architecture {arch!r} ({what})")


def planned_weights(path: Path | None, expected: str, flag: str) -> Path | None:
    """The weights file a run was planned with (by its hash), as this process was given it; None when it uses none."""
    if not expected:
        return None
    if path is None:
        raise UserError(f"this run starts from a weights file (content hash {expected}) that this process was not given; pass {flag}")
    found = weights_hash(path)
    if found != expected:
        raise UserError(f"{flag} {str(path)!r} has content hash {found}, not the {expected} the run was planned with")
    return path
