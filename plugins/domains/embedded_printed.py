"""The printed domain: font digits in thousands of procedural styles, scanned like the UCI digits.

Each image starts from one font file's glyph of a digit, then gets its own stroke weight,
slant, small rotation, aspect and a smooth random (elastic) warp, so one glyph yields
hundreds of distinct shapes. The result is size-normalised into a 32x32 bitmap and
block-counted to 8x8 the way the UCI handwritten digits were, upscaled like the
handwritten domain, and printed in random ink and paper grey levels with blur and noise.
Train and test draw on disjoint font families (see :mod:`embedded_fonts`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from cdkd_bench import DomainData

from .embedded_batch_ops import affine_grid, blur, blur_all, smooth_basis
from .embedded_common import SIZE, as_domain, balanced_labels, block_counts, upscale
from .embedded_fonts import TEST_FAMILIES, TRAIN_FAMILIES, family_files, render_glyphs, sample_fonts

TRAIN_PER_CLASS = 500
TEST_PER_CLASS = 250
CANVAS = 64  # the glyphs are warped at twice the bitmap's resolution, so warps stay smooth
GLYPH_BOX = 44  # room left around the glyph for rotation and warps


@dataclass(frozen=True)
class PrintedSplit:
    """Per image of one split: its font file name and its 8x8 scan (the shape before ink and paper)."""

    fonts: np.ndarray
    scans: np.ndarray


def _masters(glyphs: list[list[Image.Image]]) -> torch.Tensor:
    """(fonts, 10, CANVAS, CANVAS) float masks: each glyph fitted into a centred GLYPH_BOX square."""
    out = np.zeros((len(glyphs), 10, CANVAS, CANVAS), dtype=np.float32)
    for f, digits in enumerate(glyphs):
        for d, glyph in enumerate(digits):
            scale = GLYPH_BOX / max(glyph.size)
            w, h = max(1, round(glyph.width * scale)), max(1, round(glyph.height * scale))
            top, left = (CANVAS - h) // 2, (CANVAS - w) // 2
            out[f, d, top : top + h, left : left + w] = np.asarray(glyph.resize((w, h), Image.Resampling.BILINEAR)) / 255.0
    return torch.from_numpy(out)


@dataclass(frozen=True)
class _Style:
    """Every random choice of a batch's shapes, drawn up front so chunking never changes them."""

    angle: np.ndarray  # radians, small rotation
    slant: np.ndarray  # x shear per unit of y
    aspect: np.ndarray  # x stretch
    elastic: np.ndarray  # (N, 2, 4, 4) displacements at the warp's control points
    threshold: np.ndarray  # where the blurred glyph counts as ink: low = bolder, high = lighter
    bold: np.ndarray  # dilate the ink by one pixel

    @classmethod
    def draw(cls, n: int, rng: np.random.Generator) -> _Style:
        return cls(
            angle=np.radians(rng.uniform(-10, 10, n)),
            slant=rng.uniform(-0.3, 0.3, n),
            aspect=np.exp(rng.uniform(-0.2, 0.2, n)),
            # Up to about 3 canvas pixels: enough to bend strokes without breaking the digit.
            elastic=rng.normal(size=(n, 2, 4, 4)) * rng.uniform(0, 0.06, (n, 1, 1, 1)),
            threshold=rng.uniform(0.25, 0.55, n),
            bold=rng.random(n) < 0.25,
        )

    def rows(self, chunk: slice) -> _Style:
        return _Style(*(getattr(self, f)[chunk] for f in self.__dataclass_fields__))


def _warp(masks: torch.Tensor, style: _Style) -> torch.Tensor:
    """Slant, rotation, aspect and an elastic field, all in one ``grid_sample`` over the batch."""
    n = len(masks)
    cos, sin = np.cos(style.angle), np.sin(style.angle)
    # Output → input coordinates: rotate, then shear x by y (slant), then stretch x.
    theta = np.zeros((n, 2, 3), dtype=np.float32)
    theta[:, 0, 0] = style.aspect * (cos + style.slant * sin)
    theta[:, 0, 1] = style.aspect * (-sin + style.slant * cos)
    theta[:, 1, 0] = sin
    theta[:, 1, 1] = cos
    grid = affine_grid(torch.from_numpy(theta), CANVAS)
    basis = smooth_basis(4, CANVAS)
    field = basis @ torch.from_numpy(style.elastic.astype(np.float32)) @ basis.T  # (n, 2, CANVAS, CANVAS)
    return F.grid_sample(masks, grid + field.permute(0, 2, 3, 1), mode="bilinear", padding_mode="zeros", align_corners=False)


def _stroke(warped: torch.Tensor, style: _Style) -> torch.Tensor:
    """Ink of each image's weight: threshold the blurred glyph low (bolder) or high (lighter), maybe dilate."""
    soft = blur_all(warped[:, 0], 1.2)
    ink = (soft > torch.from_numpy(style.threshold.astype(np.float32))[:, None, None]).float()
    bold = torch.from_numpy(style.bold)
    ink[bold] = F.max_pool2d(ink[bold][:, None], 3, stride=1, padding=1)[:, 0]
    return ink


def _size_normalise(ink: torch.Tensor) -> np.ndarray:
    """(N, CANVAS, CANVAS) ink → (N, 32, 32) bitmaps, each glyph's box filling 32 pixels on its longer side.

    As in the UCI scans, the aspect ratio is kept and the box is centred.
    """
    n, size = len(ink), ink.shape[-1]
    on = ink > 0.5
    rows, cols = on.any(dim=2), on.any(dim=1)

    def extent(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        first = mask.float().argmax(dim=1)
        last = size - 1 - mask.flip(1).float().argmax(dim=1)
        lo, hi = 2 * first / size - 1, 2 * (last + 1) / size - 1  # pixel edges in grid coordinates
        return (lo + hi) / 2, (hi - lo) / 2

    cy, hy = extent(rows)
    cx, hx = extent(cols)
    half = torch.maximum(hx, hy).clamp(min=2 / size)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = half, cx
    theta[:, 1, 1], theta[:, 1, 2] = half, cy
    grid = affine_grid(theta, 2 * SIZE)
    fine = F.grid_sample(ink[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return (F.avg_pool2d(fine, 2)[:, 0] > 0.5).numpy()


def _photograph(masks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Light ink on dark paper like the handwritten scans, at random levels, blur and noise."""
    n = len(masks)
    ink = rng.uniform(150, 255, (n, 1, 1))
    paper = rng.uniform(0, 90, (n, 1, 1))
    images = paper + (ink - paper) * masks
    images = blur(torch.from_numpy(images.astype(np.float32)), rng.uniform(0, 1.0, n), 1.0).numpy()
    images = images + rng.normal(size=images.shape) * rng.uniform(0, 12, (n, 1, 1))
    return np.clip(images.round(), 0, 255).astype(np.uint8)[:, None]


CHUNK = 256  # images shaped at once: small enough that each step's arrays stay in cache


def _split(families: tuple[str, ...], per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, PrintedSplit]:
    """Images, labels, font indices and metadata for one split, drawn only from ``families``."""
    rng = np.random.default_rng(seed)
    files = family_files(families)
    masters = _masters(render_glyphs(files))
    labels = balanced_labels(per_class, rng)
    fonts = sample_fonts(families, len(labels), rng)
    style = _Style.draw(len(labels), rng)
    bitmaps = []
    for start in range(0, len(labels), CHUNK):
        chunk = slice(start, start + CHUNK)
        glyphs = masters[torch.from_numpy(fonts[chunk]), torch.from_numpy(labels[chunk])][:, None]
        bitmaps.append(_size_normalise(_stroke(_warp(glyphs, style.rows(chunk)), style.rows(chunk))))
    scans = block_counts(np.concatenate(bitmaps))
    images = _photograph(upscale(scans), rng)
    return images, labels, fonts, PrintedSplit(np.array(files)[fonts], scans)


def printed_with_metadata() -> tuple[DomainData, PrintedSplit, PrintedSplit]:
    """The printed domain and, per split, which font drew each image (for tests and audits)."""
    train_x, train_y, train_fonts, train_meta = _split(TRAIN_FAMILIES, TRAIN_PER_CLASS, seed=2)
    test_x, test_y, _, test_meta = _split(TEST_FAMILIES, TEST_PER_CLASS, seed=3)
    # Every variant of one font file's glyph of a digit is one item: validation keeps it whole.
    groups = train_fonts * 10 + train_y
    return as_domain(train_x, train_y, test_x, test_y, groups), train_meta, test_meta


def printed() -> DomainData:
    return printed_with_metadata()[0]

