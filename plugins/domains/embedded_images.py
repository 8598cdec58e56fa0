"""Digit images made from data that installed packages ship, so the embedded suite needs no download.

* handwritten — scikit-learn's 1,797 handwritten digits (8x8, 16 grey levels), upscaled into
                a centred 24-pixel box, white on black; a fixed stratified 80/20 split.
* printed     — digits from the TrueType fonts matplotlib ships, each in its own procedural
                style (stroke weight, slant, rotation, aspect, elastic warp), "scanned" the
                way the UCI digits were (32x32 bitmap → 4x4 block counts → 8x8), in random
                ink and paper grey levels with blur and noise. Train and test use disjoint
                font families (:mod:`embedded_fonts`), so the test measures unseen typefaces.
* textured    — the handwritten digits blended onto colour texture crops the way MNIST-M
                blends MNIST onto photo crops (out = |crop − digit|), three crops per digit;
                train and test digits come from the handwritten train and test splits, and
                train and test crops from disjoint sources (:mod:`embedded_textures`):
                photographs, renders of elevation and MRI data, procedural textures.
* street      — coloured, street-number-like digits (the hard direction of SVHN→MNIST):
                a font digit centred between partly visible neighbours, on a coloured,
                gradient or textured background with clutter, at random contrast, scale,
                aspect and rotation, then blurred and JPEG-compressed; font families split
                like printed's, texture sources like textured's (:mod:`embedded_street`).

Every generator is seeded and deterministic and returns uint8 ``(N, C, 32, 32)`` images,
int64 labels and ``train_groups``: train images with one id are variants of one item (a
scan on several textures, one font's glyph of a digit), which the engine keeps whole when
it cuts a source-validation split. The suite's loader calls these four functions by name.
"""

from __future__ import annotations

import numpy as np

from cdkd_bench import DomainData

from .embedded_common import as_domain, handwritten_arrays
from .embedded_printed import printed
from .embedded_street import street
from .embedded_textured import TEXTURED_COPIES, textured

__all__ = ["TEXTURED_COPIES", "handwritten", "printed", "street", "textured"]


def handwritten() -> DomainData:
    """scikit-learn's digits as they are; each scan is its own group (it has no variants)."""
    images, labels, train, test = handwritten_arrays()
    return as_domain(images[train], labels[train], images[test], labels[test], np.arange(len(train)))
