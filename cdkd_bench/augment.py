"""Batched random augmentation on the device, drawn from a seeded generator."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from cdkd_bench.api import Augmentation


def augmentation_from_dict(data: dict[str, Any] | None) -> Augmentation | None:
    """The inverse of ``dataclasses.asdict`` for specs read back from JSON (lists → tuples)."""
    if data is None:
        return None
    fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    return Augmentation(**fields)


def augmenter(policy: Augmentation, seed: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function that augments a batch of normalised images, reproducibly for ``seed``."""
    generator = torch.Generator().manual_seed(seed)

    def uniform(low: float, high: float, *shape: int, device: torch.device) -> torch.Tensor:
        return (low + (high - low) * torch.rand(*shape, generator=generator)).to(device)

    def apply(x: torch.Tensor) -> torch.Tensor:
        n, channels, device = x.shape[0], x.shape[1], x.device
        angle = uniform(-1, 1, n, device=device) * math.radians(policy.rotation_degrees)
        scale = uniform(*policy.scale, n, device=device)
        shift = uniform(-1, 1, 2, n, device=device) * 2 * policy.translate  # grid units span 2
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack([torch.stack([cos, -sin, shift[0]], 1), torch.stack([sin, cos, shift[1]], 1)], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
        x = x * uniform(*policy.gain, n, channels, 1, 1, device=device)
        x = x + uniform(-policy.bias, policy.bias, n, channels, 1, 1, device=device)
        flip = uniform(0, 1, n, 1, 1, 1, device=device) < policy.invert_probability
        return torch.where(flip, -x, x).clamp(-1, 1)

    return apply
