"""The textured domain: handwritten digits blended onto colour texture crops, MNIST-M style.

MNIST-M's blend is kept: out = |crop − digit| per channel, so a digit shows as an inverted
patch of its texture. Train images come from the handwritten train digits and train
texture sources, test images from the handwritten test digits and the disjoint test
sources (see :mod:`embedded_textures`), so neither a digit nor a texture is shared.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cdkd_bench import DomainData

from .embedded_common import SIZE, as_domain, handwritten_arrays
from .embedded_textures import TEST_TEXTURES, TRAIN_TEXTURES, load_sources, random_crops

TEXTURED_COPIES = 3  # crops per handwritten digit: 1,437 train digits become 4,311 images


@dataclass(frozen=True)
class TexturedSplit:
    """Per image of one split: the texture source of its crop and the handwritten digit (index in the 1,797)."""

    sources: np.ndarray
    digits: np.ndarray


def _blend(digits: np.ndarray, names: tuple[str, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, 1, 32, 32) grey digits over random crops of ``names`` → (N, 3, 32, 32) images, and each crop's source name."""
    crops, which = random_crops(load_sources(names), len(digits), SIZE, np.random.default_rng(seed))
    images = np.abs(crops.transpose(0, 3, 1, 2).astype(np.int16) - digits.astype(np.int16)).astype(np.uint8)
    return images, np.array(names)[which]


def textured_with_metadata() -> tuple[DomainData, TexturedSplit, TexturedSplit]:
    """The textured domain and, per split, each image's texture source and handwritten digit."""
    digits, labels, train, test = handwritten_arrays()
    # Copies of one scan follow each other copy by copy: [all train digits] × TEXTURED_COPIES.
    train_digits, test_digits = np.tile(train, TEXTURED_COPIES), np.tile(test, TEXTURED_COPIES)
    train_x, train_sources = _blend(digits[train_digits], TRAIN_TEXTURES, seed=1)
    test_x, test_sources = _blend(digits[test_digits], TEST_TEXTURES, seed=4)
    # The copies of one handwritten scan are one item: validation keeps them together.
    domain = as_domain(train_x, labels[train_digits], test_x, labels[test_digits], train_digits)
    return domain, TexturedSplit(train_sources, train_digits), TexturedSplit(test_sources, test_digits)


def textured() -> DomainData:
    return textured_with_metadata()[0]
