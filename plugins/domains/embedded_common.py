"""Helpers the embedded digit generators share: splits, the UCI scanner, shipped-file reading.

Kept apart from :mod:`embedded_images` (the public face) so the per-domain modules can use
them without importing each other in a circle.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from cdkd_bench import DomainData
from cdkd_bench.errors import UserError

SIZE = 32
TEST_FRACTION = 0.2
T = TypeVar("T")

# What numpy, PIL, gzip and zipfile raise for a missing, truncated or garbled file.
_READ_ERRORS = (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile)


def read_shipped(path: Path, package: str, read: Callable[[Path], T]) -> T:
    """``read(path)`` for a file that ``package`` installs; a missing or damaged one is the user's to fix.

    The message names the file, not this machine's folder, and says how to get it back.
    """
    try:
        return read(path)
    except _READ_ERRORS as error:
        raise UserError(
            f"the file {path.name} that {package} ships is missing or unreadable; "
            f"reinstall {package} (pip install --force-reinstall {package}) to restore it"
        ) from error


def stratified_split(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a per-class train/test split, fixed by ``seed``."""
    rng = np.random.default_rng(seed)
    train: list[int] = []
    test: list[int] = []
    for label in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == label))
        n_test = int(round(len(idx) * TEST_FRACTION))
        test.extend(idx[:n_test])
        train.extend(idx[n_test:])
    return np.sort(np.array(train)), np.sort(np.array(test))


def balanced_labels(per_class: int, rng: np.random.Generator) -> np.ndarray:
    """``per_class`` of each digit, shuffled, so every split is exactly balanced."""
    return rng.permutation(np.repeat(np.arange(10), per_class)).astype(np.int64)


def as_domain(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, groups: np.ndarray) -> DomainData:
    """Arrays → the tensors the engine expects (uint8 images, int64 labels and groups)."""
    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a))

    return DomainData(
        tensor(train_x.astype(np.uint8)), tensor(train_y.astype(np.int64)),
        tensor(test_x.astype(np.uint8)), tensor(test_y.astype(np.int64)),
        tensor(groups.astype(np.int64)),
    )


def upscale(scans: np.ndarray) -> np.ndarray:
    """8x8 scans in [0, 1] → (N, 32, 32) float, the digit filling a centred 24-pixel box like MNIST."""
    small = torch.from_numpy(scans.astype(np.float32))[:, None]
    big = F.interpolate(small, size=(24, 24), mode="bilinear", align_corners=False)
    return F.pad(big, (4, 4, 4, 4)).clamp(0, 1)[:, 0].numpy()


def block_counts(bitmaps: np.ndarray) -> np.ndarray:
    """(N, 32, 32) on/off bitmaps → (N, 8, 8) in [0, 1]: the share of "on" pixels per 4x4 block.

    This is how the UCI digits behind scikit-learn's set were scanned, so the printed and
    handwritten domains differ in the shapes of their digits, not in their scanner.
    """
    n = len(bitmaps)
    return bitmaps.reshape(n, 8, 4, 8, 4).sum(axis=(2, 4)) / 16.0


def handwritten_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn digits as (N, 1, 32, 32) uint8, white on black, with the suite's fixed split."""
    from sklearn.datasets import load_digits

    # load_digits reads digits.csv.gz from scikit-learn's install; a damaged copy is the user's to fix.
    digits = read_shipped(Path("digits.csv.gz"), "scikit-learn", lambda _path: load_digits())
    images = (upscale(digits.images / 16.0) * 255).round().astype(np.uint8)[:, None]
    labels = digits.target.astype(np.int64)
    train, test = stratified_split(labels, seed=0)
    return images, labels, train, test
