"""Tiny files in the digits suite's real formats, written the way the published datasets are.

Each ``write_*`` returns what the domain should decode: ``(train_x, train_y, test_x, test_y)`` as numpy
arrays, images uint8 ``(N, C, H, W)`` and labels 0-9.
"""

from __future__ import annotations

import bz2
import gzip
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

Expected = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]

# USPS values in [-1, 1] and the uint8 pixel each becomes: (v + 1) / 2 * 255, truncated as torchvision does.
USPS_LEVELS = {-1.0: 0, -0.5: 63, 0.0: 127, 0.5: 191, 1.0: 255}


def _rng(name: str, count: int) -> np.random.Generator:
    return np.random.default_rng([sum(map(ord, name)), count])


def _labels(rng: np.random.Generator, count: int) -> np.ndarray:
    return rng.integers(0, 10, count).astype(np.int64)


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    """An IDX file: big-endian magic number, one big-endian uint32 per dimension, then the uint8 values."""
    header = magic.to_bytes(4, "big") + b"".join(size.to_bytes(4, "big") for size in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(root: Path, train: int = 12, test: int = 6, compress: bool = True) -> Expected:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    expected = []
    for split, count in (("train", train), ("t10k", test)):
        rng = _rng(f"mnist-{split}", count)
        x, y = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8), _labels(rng, count)
        for kind, array, magic in (("images-idx3", x, 2051), ("labels-idx1", y, 2049)):
            data = idx_bytes(array, magic)
            name = raw / f"{split}-{kind}-ubyte"
            if compress:
                (raw / f"{name.name}.gz").write_bytes(gzip.compress(data))
            else:
                name.write_bytes(data)
        expected += [x[:, None], y]
    return tuple(expected)  # type: ignore[return-value]


def usps_lines(values: np.ndarray, labels: np.ndarray) -> bytes:
    """LIBSVM lines `label index:value …`, labels 1-10, 256 values each."""
    lines = (" ".join([str(label + 1), *(f"{i}:{v:g}" for i, v in enumerate(row, 1))]) for row, label in zip(values, labels, strict=True))
    return ("\n".join(lines) + "\n").encode()


def write_usps(root: Path, train: int = 12, test: int = 6) -> Expected:
    folder = root / "USPS"
    folder.mkdir(parents=True, exist_ok=True)
    levels = np.array(list(USPS_LEVELS))
    pixels = np.array(list(USPS_LEVELS.values()), np.uint8)
    expected = []
    for name, count in (("usps.bz2", train), ("usps.t.bz2", test)):
        rng = _rng(f"usps-{name}", count)
        choice, y = rng.integers(0, len(levels), (count, 256)), _labels(rng, count)
        (folder / name).write_bytes(bz2.compress(usps_lines(levels[choice], y)))
        expected += [pixels[choice].reshape(count, 1, 16, 16), y]
    return tuple(expected)  # type: ignore[return-value]


def write_svhn(root: Path, train: int = 12, test: int = 6) -> Expected:
    folder = root / "SVHN"
    folder.mkdir(parents=True, exist_ok=True)
    expected = []
    for name, count in (("train_32x32.mat", train), ("test_32x32.mat", test)):
        rng = _rng(f"svhn-{name}", count)
        x, y = rng.integers(0, 256, (count, 3, 32, 32), dtype=np.uint8), _labels(rng, count)
        # SVHN stores height x width x channel x N, and the digit 0 as the label 10.
        stored = np.where(y == 0, 10, y).astype(np.uint8).reshape(-1, 1)
        scipy.io.savemat(folder / name, {"X": x.transpose(2, 3, 1, 0), "y": stored})
        expected += [x, y]
    return tuple(expected)  # type: ignore[return-value]


def write_mnistm(root: Path, train: int = 12, test: int = 6) -> Expected:
    base = root / "mnist_m"
    expected = []
    for split, count in (("mnist_m_train", train), ("mnist_m_test", test)):
        folder = base / split
        folder.mkdir(parents=True, exist_ok=True)
        rng = _rng(split, count)
        x, y = rng.integers(0, 256, (count, 3, 28, 28), dtype=np.uint8), _labels(rng, count)
        lines = []
        for i, (image, label) in enumerate(zip(x, y, strict=True)):
            Image.fromarray(image.transpose(1, 2, 0)).save(folder / f"{i:08d}.png")
            lines.append(f"{i:08d}.png {label}\n")
        (base / f"{split}_labels.txt").write_text("".join(lines))
        expected += [x, y]
    return tuple(expected)  # type: ignore[return-value]


WRITERS = {"digits.mnist": write_mnist, "digits.usps": write_usps, "digits.svhn": write_svhn, "digits.mnistm": write_mnistm}


def write_digits_root(root: Path, train: int = 12, test: int = 6) -> None:
    """A data root holding all four digits domains in their published layouts, ``train`` and ``test`` images each."""
    for write in WRITERS.values():
        write(root, train, test)
