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
    """A function that augments a batch of normalised images, reproducibly for ``seed``.

    Every random parameter of a batch comes from one draw of a generator on the images'
    device: no copy from the host and no synchronisation inside a training step.
    """
    generators: dict[torch.device, torch.Generator] = {}

    def apply(x: torch.Tensor) -> torch.Tensor:
        n, channels, device = x.shape[0], x.shape[1], x.device
        if device not in generators:
            generators[device] = torch.Generator(device=device).manual_seed(seed)
        u = torch.rand(n, 5 + 2 * channels, generator=generators[device], device=device)

        def between(low: float, high: float, column: slice | int) -> torch.Tensor:
            return low + (high - low) * u[:, column]

        angle = between(-1, 1, 0) * math.radians(policy.rotation_degrees)
        scale = between(*policy.scale, 1)
        shift = between(-1, 1, slice(2, 4)).T * 2 * policy.translate  # grid units span 2
        flip = (u[:, 4] < policy.invert_probability).view(n, 1, 1, 1)
        gain = between(*policy.gain, slice(5, 5 + channels)).view(n, channels, 1, 1)
        bias = between(-policy.bias, policy.bias, slice(5 + channels, 5 + 2 * channels)).view(n, channels, 1, 1)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack([torch.stack([cos, -sin, shift[0]], 1), torch.stack([sin, cos, shift[1]], 1)], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
        x = torch.where(flip, -(x * gain + bias), x * gain + bias).clamp(-1, 1)
        return x.contiguous(memory_format=torch.channels_last)

    return apply
