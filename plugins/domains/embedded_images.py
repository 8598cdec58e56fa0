"""Digit images made from data that installed packages ship, so the embedded suite needs no download.

* handwritten — scikit-learn's 1,797 handwritten digits (8x8, 16 grey levels), upscaled.
* printed     — digits rendered with the TrueType fonts matplotlib ships, slightly rotated,
                then "scanned" the way the UCI handwritten digits were (32x32 bitmap →
                4x4 block counts → 8x8), in random ink and paper grey levels.
* textured    — the handwritten digits blended onto crops of the natural photographs
                scikit-learn ships, the way MNIST-M blends MNIST onto BSDS500 crops,
                three crops per digit.

Every generator is seeded and deterministic; each returns uint8 ``(N, C, 32, 32)`` tensors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from cdkd_bench import DomainData

SIZE = 32
TEST_FRACTION = 0.2
PRINTED_PER_CLASS = 300
TEXTURED_COPIES = 3
# Fonts whose digit code points hold symbols, fallback boxes or size variants, not digits.
_NOT_DIGIT_FONTS = ("LastResort", "STIXSiz", "STIXNonUni", "cmex", "cmsy", "cmmi", "Display")


def _stratified_split(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a per-class train/test split, fixed by ``seed``."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == label))
        n_test = int(round(len(idx) * TEST_FRACTION))
        test.extend(idx[:n_test])
        train.extend(idx[n_test:])
    return np.sort(np.array(train)), np.sort(np.array(test))


def _as_domain(images: np.ndarray, labels: np.ndarray, train: np.ndarray, test: np.ndarray) -> DomainData:
    x = torch.from_numpy(np.ascontiguousarray(images))
    y = torch.from_numpy(labels.astype(np.int64))
    return DomainData(x[train], y[train], x[test], y[test])


def _upscale(scans: np.ndarray) -> np.ndarray:
    """8x8 scans in [0, 1] → (N, 32, 32) float, the digit filling a centred 24-pixel box like MNIST."""
    small = torch.from_numpy(scans.astype(np.float32))[:, None]
    big = F.interpolate(small, size=(24, 24), mode="bilinear", align_corners=False)
    return F.pad(big, (4, 4, 4, 4)).clamp(0, 1)[:, 0].numpy()


def _handwritten_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn digits as (N, 1, 32, 32) uint8, white on black, with a fixed split."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (_upscale(digits.images / 16.0) * 255).round().astype(np.uint8)[:, None]
    labels = digits.target.astype(np.int64)
    train, test = _stratified_split(labels, seed=0)
    return images, labels, train, test


def handwritten() -> DomainData:
    images, labels, train, test = _handwritten_arrays()
    return _as_domain(images, labels, train, test)


def textured() -> DomainData:
    """Handwritten digits over photo crops: out = |crop - digit| per channel (MNIST-M's blend).

    Train and test come from the handwritten train and test digits respectively, so a
    textured test image never shares its digit with a handwritten training image.
    """
    from sklearn.datasets import load_sample_images

    digits, digit_labels, digit_train, digit_test = _handwritten_arrays()
    photos = [np.asarray(p, dtype=np.int16) for p in load_sample_images().images]
    rng = np.random.default_rng(1)
    # Copy k of digit i sits at index k * N + i, so the split carries over copy by copy.
    images = np.repeat(digits[None], TEXTURED_COPIES, axis=0).reshape(-1, *digits.shape[1:])
    out = np.empty((len(images), 3, SIZE, SIZE), dtype=np.uint8)
    for i, digit in enumerate(images):
        photo = photos[rng.integers(len(photos))]
        top = rng.integers(photo.shape[0] - SIZE)
        left = rng.integers(photo.shape[1] - SIZE)
        crop = photo[top : top + SIZE, left : left + SIZE].transpose(2, 0, 1)
        out[i] = np.abs(crop - digit.astype(np.int16)).astype(np.uint8)
    n = len(digits)
    labels = np.tile(digit_labels, TEXTURED_COPIES)
    train = np.concatenate([digit_train + k * n for k in range(TEXTURED_COPIES)])
    test = np.concatenate([digit_test + k * n for k in range(TEXTURED_COPIES)])
    return _as_domain(out, labels, train, test)


def digit_fonts() -> list[Path]:
    """matplotlib's bundled fonts that draw ten distinct, non-empty digit glyphs."""
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    usable = []
    for path in sorted(folder.glob("*.ttf")):
        if any(marker in path.name for marker in _NOT_DIGIT_FONTS):
            continue
        font = ImageFont.truetype(str(path), 24)
        glyphs = []
        for digit in "0123456789":
            canvas = Image.new("L", (48, 48))
            ImageDraw.Draw(canvas).text((24, 24), digit, fill=255, font=font, anchor="mm")
            glyphs.append(np.asarray(canvas).tobytes())
        if all(any(g) for g in glyphs) and len(set(glyphs)) == 10:
            usable.append(path)
    return usable


def _glyph_scan(font: ImageFont.FreeTypeFont, digit: str, angle: float) -> np.ndarray:
    """One digit drawn large, rotated, size-normalised into a 32x32 bitmap and block-counted to 8x8.

    This follows how the UCI digits behind scikit-learn's set were made, so the printed and
    handwritten domains differ in the shapes of their digits, not in their scanner.
    """
    canvas = Image.new("L", (160, 160))
    ImageDraw.Draw(canvas).text((80, 80), digit, fill=255, font=font, anchor="mm")
    glyph = canvas.rotate(angle, resample=Image.Resampling.BILINEAR)
    glyph = glyph.crop(glyph.getbbox())
    scale = 32 / max(glyph.size)  # keep the glyph's aspect ratio, fill the box's longer side
    glyph = glyph.resize((max(1, round(glyph.width * scale)), max(1, round(glyph.height * scale))), Image.Resampling.BILINEAR)
    bitmap = Image.new("L", (32, 32))
    bitmap.paste(glyph, ((32 - glyph.width) // 2, (32 - glyph.height) // 2))
    on = np.asarray(bitmap) > 127
    return on.reshape(8, 4, 8, 4).sum(axis=(1, 3)) / 16.0


def printed() -> DomainData:
    """Font digits through the UCI scanning process, in random grey levels of ink and paper."""
    fonts = digit_fonts()
    if not fonts:
        raise RuntimeError("matplotlib ships no usable digit fonts; is the matplotlib install complete?")
    rng = np.random.default_rng(2)
    loaded = [ImageFont.truetype(str(path), 96) for path in fonts]
    labels = np.tile(np.arange(10), PRINTED_PER_CLASS)
    scans = np.stack([
        _glyph_scan(loaded[int(rng.integers(len(loaded)))], str(label), float(rng.uniform(-12, 12)))
        for label in labels
    ])
    masks = _upscale(scans)
    # Light ink on dark paper like the handwritten scans, at random levels and contrasts.
    ink = rng.uniform(150, 255, size=(len(labels), 1, 1))
    paper = rng.uniform(0, 90, size=(len(labels), 1, 1))
    images = (paper + (ink - paper) * masks).round().astype(np.uint8)[:, None]
    train, test = _stratified_split(labels, seed=3)
    return _as_domain(images, labels, train, test)
