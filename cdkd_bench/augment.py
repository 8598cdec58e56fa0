"""Batched random augmentation on the device, drawn from a seeded generator."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from cdkd_bench.api import Augmentation
from cdkd_bench.images import centre_crop


def augmentation_from_dict(data: dict[str, Any] | None) -> Augmentation | None:
    """The inverse of ``dataclasses.asdict`` for specs read back from JSON (lists → tuples)."""
    if data is None:
        return None
    fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    return Augmentation(**fields)


def random_resized_crop(x: torch.Tensor, size: int, policy: Augmentation, generator: torch.Generator) -> torch.Tensor:
    """Per image, a box of a random share of the area (``policy.crop_area``) and aspect ratio (log-uniform in
    ``policy.crop_ratio``) at a random place, resized to ``size`` by bilinear sampling; then a random mirror.

    torchvision's RandomResizedCrop redraws a box that does not fit (ten tries, then the centre);
    batched, a box that does not fit is clipped to the image instead, which happens only at the
    extreme ratios of a near-whole-image area. All boxes are sampled in one ``roi_align`` call.
    """
    from torchvision.ops import roi_align

    assert policy.crop_area is not None
    n, _, height, width = x.shape
    u = torch.rand(n, 5, generator=generator, device=x.device)
    area = (policy.crop_area[0] + (policy.crop_area[1] - policy.crop_area[0]) * u[:, 0]) * height * width
    low, high = math.log(policy.crop_ratio[0]), math.log(policy.crop_ratio[1])
    ratio = torch.exp(low + (high - low) * u[:, 1])
    box_w = torch.sqrt(area * ratio).clamp(max=width)
    box_h = torch.sqrt(area / ratio).clamp(max=height)
    left, top = u[:, 2] * (width - box_w), u[:, 3] * (height - box_h)
    boxes = torch.stack([torch.arange(n, device=x.device, dtype=x.dtype), left, top, left + box_w, top + box_h], dim=1)
    # sampling_ratio=0: ceil(box / size) samples per output pixel and axis, per box: exact bilinear sampling for a
    # box no larger than the output, an average over the pixels it covers for a larger one (antialiasing, as
    # torchvision's resize does), instead of a fixed grid that blurs upscaled crops.
    crops = roi_align(x.contiguous(), boxes, output_size=(size, size), spatial_scale=1.0, sampling_ratio=0, aligned=True)
    mirrored = (u[:, 4] < policy.hflip_probability).view(n, 1, 1, 1)
    return torch.where(mirrored, crops.flip(-1), crops)


def _is_identity(policy: Augmentation) -> bool:
    """Whether the affine and photometric stage would leave every image unchanged."""
    return (policy.rotation_degrees == 0 and tuple(policy.scale) == (1.0, 1.0) and policy.translate == 0
            and tuple(policy.gain) == (1.0, 1.0) and policy.bias == 0 and policy.invert_probability == 0)


def augmenter(policy: Augmentation, seed: int, size: int | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function that augments a batch of normalised images, reproducibly for ``seed``.

    Every random parameter of a batch comes from one draw of a generator on the images'
    device: no copy from the host and no synchronisation inside a training step. With
    ``size`` below the images' size (a suite that crops), the output is ``size`` square:
    a random resized crop when the policy has one, else the centre.
    """
    generators: dict[torch.device, torch.Generator] = {}
    identity = _is_identity(policy)

    def apply(x: torch.Tensor) -> torch.Tensor:
        device = x.device
        if device not in generators:
            generators[device] = torch.Generator(device=device).manual_seed(seed)
        if policy.crop_area is not None:
            x = random_resized_crop(x, size or x.shape[-1], policy, generators[device])
        elif size is not None and x.shape[-1] != size:
            x = centre_crop(x, size)
        if identity:
            return x.contiguous(memory_format=torch.channels_last)
        n, channels = x.shape[0], x.shape[1]
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
