"""Batched image operations on (N, H, W) torch tensors, written for speed on a CPU core.

The generators shape thousands of small images at once. At this size torch's general
tools were measured slow on one CPU core (``F.affine_grid`` several times slower than one
einsum, per-image grouped convolutions slower than a few shared-kernel matmuls), so
each step here is recast as a few large products.
"""

from __future__ import annotations

import numpy as np
import torch


def affine_grid(theta: torch.Tensor, size: int) -> torch.Tensor:
    """What ``F.affine_grid`` returns for square outputs (``align_corners=False``), several times faster on CPU."""
    c = (2 * torch.arange(size, dtype=torch.float32) + 1) / size - 1  # pixel centres
    y, x = torch.meshgrid(c, c, indexing="ij")
    points = torch.stack([x.flatten(), y.flatten(), torch.ones(size * size)], dim=1)
    return torch.einsum("pk,njk->npj", points, theta).contiguous().reshape(len(theta), size, size, 2)


def smooth_basis(coarse: int, size: int) -> torch.Tensor:
    """(size, coarse) weights spreading ``coarse`` control values smoothly over ``size`` pixels."""
    centres = torch.linspace(-1, 1, coarse)
    pixels = (2 * torch.arange(size, dtype=torch.float32) + 1) / size - 1
    weights = torch.exp(-0.5 * ((pixels[:, None] - centres[None]) / (2 / (coarse - 1))) ** 2)
    return weights / weights.sum(dim=1, keepdim=True)


def gaussian_matrix(sigma: float, size: int) -> torch.Tensor:
    """(size, size) row-normalised Gaussian blur matrix (normalising rows keeps borders from darkening)."""
    i = torch.arange(size, dtype=torch.float64)
    k = torch.exp(-0.5 * ((i[:, None] - i[None, :]) / max(sigma, 1e-3)) ** 2)
    # Cut the far tails: as float32 denormals they would slow every product tenfold.
    k = torch.where(k > 1e-6, k, 0.0)
    return (k / k.sum(dim=1, keepdim=True)).float()


def blur_all(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of (N, S, S) images with one sigma, as two large matmuls (columns, then rows)."""
    n, size = len(images), images.shape[-1]
    k = gaussian_matrix(sigma, size)
    rows = (images.reshape(-1, size) @ k.T).reshape(n, size, size)
    return (rows.transpose(1, 2).reshape(-1, size) @ k.T).reshape(n, size, size).transpose(1, 2)


BLUR_LEVELS = 6  # per-image blur is quantised so each level is one batched blur


def blur(images: torch.Tensor, sigmas: np.ndarray, max_sigma: float) -> torch.Tensor:
    """Per-image Gaussian blur of (N, S, S) images, each sigma rounded to one of BLUR_LEVELS in [0, max_sigma]."""
    levels = np.round(np.clip(sigmas / max_sigma, 0, 1) * (BLUR_LEVELS - 1)).astype(np.int64)
    out = images.clone()
    for level in range(1, BLUR_LEVELS):
        chosen = torch.from_numpy(levels == level)
        if chosen.any():
            out[chosen] = blur_all(images[chosen], max_sigma * level / (BLUR_LEVELS - 1))
    return out
