"""Readers for the digits suite's published file formats: IDX (MNIST), LIBSVM in bz2 (USPS), MATLAB ``.mat``
(SVHN) and PNG folders with a label list (MNIST-M).

Each returns numpy arrays (uint8 images ``(N, C, H, W)``, int64 labels 0-9) and reports a bad file as a
one-sentence ``UserError`` that names it. torchvision's IDX reader takes only uncompressed paths and checks
the header with ``assert``, so the header is checked here and the payload read with numpy.
"""

from __future__ import annotations

import bz2
import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from cdkd_bench import UserError

IDX_IMAGES = 2051  # 0x0803: uint8 data, 3 dimensions (count, rows, columns)
IDX_LABELS = 2049  # 0x0801: uint8 data, 1 dimension (count)
USPS_PIXELS = 16 * 16

Split = tuple[np.ndarray, np.ndarray]


def read_bytes(path: Path) -> bytes:
    """The file's contents, decompressed when it ends in ``.gz`` or ``.bz2``."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {str(path)!r} ({exc.strerror or exc})") from None
    try:
        if path.suffix == ".gz":
            return gzip.decompress(raw)
        if path.suffix == ".bz2":
            return bz2.decompress(raw)
    except (OSError, EOFError, ValueError, zlib.error) as exc:
        kind = "gzip" if path.suffix == ".gz" else "bz2"
        raise UserError(f"{str(path)!r} is a truncated or corrupt {kind} file ({exc}); delete it and download it again") from None
    return raw


def read_idx(path: Path, magic: int) -> np.ndarray:
    """An IDX file of uint8 values with the given magic number, shaped as its header says."""
    data = read_bytes(path)
    kind = "image" if magic == IDX_IMAGES else "label"
    found = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    if found != magic:
        raise UserError(f"{str(path)!r} is not an IDX {kind} file: its magic number is {found}, expected {magic}")
    ndim = magic % 256
    start = 4 * (1 + ndim)
    if len(data) < start:
        raise UserError(f"{str(path)!r} is truncated: it ends inside its {start}-byte IDX header")
    shape = tuple(int.from_bytes(data[4 * i:4 * i + 4], "big") for i in range(1, ndim + 1))
    if len(data) - start != math.prod(shape):
        raise UserError(f"{str(path)!r} holds {len(data) - start:,} bytes of data but its IDX header describes "
                        f"{' x '.join(map(str, shape))} = {math.prod(shape):,}")
    return np.frombuffer(data, np.uint8, offset=start).reshape(shape)


def read_mnist(images: Path, labels: Path) -> Split:
    x = read_idx(images, IDX_IMAGES)
    y = read_idx(labels, IDX_LABELS).astype(np.int64)
    if len(x) != len(y):
        raise UserError(f"{str(images)!r} holds {len(x):,} images but {str(labels)!r} holds {len(y):,} labels")
    _check_labels(labels, y, 0)
    return x[:, None].copy(), y


def read_usps(path: Path) -> Split:
    """LIBSVM lines ``label index:value …`` with labels 1-10 and 256 values in [-1, 1] per 16x16 image."""
    lines = read_bytes(path).decode("ascii", errors="replace").splitlines()
    images = np.zeros((len(lines), USPS_PIXELS), np.float32)
    labels = np.zeros(len(lines), np.int64)
    count = 0
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        label, *pairs = line.split()
        try:
            labels[count] = _whole(label)
            for pair in pairs:
                index, value = pair.split(":")
                images[count, int(index) - 1] = float(value)
        except (ValueError, IndexError):
            raise UserError(f"{str(path)!r} line {number} is not a LIBSVM line `label index:value ...` with indices 1-{USPS_PIXELS}") from None
        count += 1
    images, labels = images[:count], labels[:count]
    _check_labels(path, labels, 1)
    # The scaling torchvision's USPS uses (truncating), so the images match what other code trains on.
    pixels = ((np.clip(images, -1, 1) + 1) / 2 * 255).astype(np.uint8)
    return pixels.reshape(-1, 1, 16, 16), labels - 1


def _whole(text: str) -> int:
    value = float(text)
    if not value.is_integer():
        raise ValueError(text)
    return int(value)


def read_svhn(path: Path) -> Split:
    """A ``.mat`` file with ``X`` (32 x 32 x 3 x N, uint8) and ``y`` (N labels 1-10, where 10 is the digit 0)."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(path, variable_names=("X", "y"))
    # scipy raises several unrelated types for files it cannot parse (ValueError, MatReadError,
    # NotImplementedError for MATLAB 7.3 files, …): every one means the same thing here.
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"{str(path)!r} is not a MATLAB file scipy can read ({exc}); delete it and download it again") from None
    missing = [key for key in ("X", "y") if key not in mat]
    if missing:
        raise UserError(f"{str(path)!r} lacks the variable{'s' if len(missing) > 1 else ''} {' and '.join(missing)} an SVHN file holds")
    x, y = mat["X"], np.asarray(mat["y"]).reshape(-1).astype(np.int64)
    if x.ndim != 4 or x.shape[2] != 3 or x.dtype != np.uint8:
        raise UserError(f"{str(path)!r} holds X of shape {x.shape} ({x.dtype}); SVHN's is height x width x 3 x N, uint8")
    if x.shape[3] != len(y):
        raise UserError(f"{str(path)!r} holds {x.shape[3]:,} images but {len(y):,} labels")
    _check_labels(path, y, 1)
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1)), np.where(y == 10, 0, y)


def read_label_list(labels: Path, folder: Path) -> tuple[list[Path], np.ndarray]:
    """The images a ``name.png label`` list names, in its order, each checked to exist in ``folder``."""
    try:
        lines = labels.read_text(errors="replace").splitlines()
        present = {entry.name for entry in folder.iterdir()}
    except OSError as exc:
        raise UserError(f"cannot read {str(exc.filename or labels)!r} ({exc.strerror or exc})") from None
    paths, values = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            name, label = line.split()
            values.append(int(label))
        except ValueError:
            raise UserError(f"{str(labels)!r} line {number} is not `<image name> <label>`") from None
        if name not in present:
            raise UserError(f"{str(labels)!r} line {number} names {name!r}, which is not in {str(folder)!r}")
        paths.append(folder / name)
    y = np.asarray(values, np.int64)
    _check_labels(labels, y, 0)
    return paths, y


def read_pngs(paths: list[Path]) -> np.ndarray:
    """The images as one uint8 RGB array ``(N, 3, H, W)``; every image must have the first one's size."""
    from PIL import Image, UnidentifiedImageError

    images: list[np.ndarray] = []
    for path in paths:
        try:
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"))
        except UnidentifiedImageError:
            raise UserError(f"{str(path)!r} is not a readable image: PIL does not recognise its format") from None
        # PIL reports a damaged PNG as OSError ("image file is truncated"), SyntaxError ("broken PNG file") or ValueError.
        except (OSError, SyntaxError, ValueError) as exc:
            raise UserError(f"{str(path)!r} is not a readable image ({exc})") from None
        if images and pixels.shape != images[0].shape:
            raise UserError(f"{str(path)!r} is {pixels.shape[1]}x{pixels.shape[0]} pixels, unlike the "
                            f"{images[0].shape[1]}x{images[0].shape[0]} of {str(paths[0])!r}")
        images.append(pixels)
    if not images:
        return np.zeros((0, 3, 28, 28), np.uint8)
    return np.stack(images).transpose(0, 3, 1, 2).copy()


def _check_labels(path: Path, labels: np.ndarray, first: int) -> None:
    bad = labels[(labels < first) | (labels > first + 9)]
    if len(bad):
        raise UserError(f"{str(path)!r} holds the label {int(bad[0])}, outside {first}-{first + 9}"
                        f"{f' (and {len(bad) - 1:,} more)' if len(bad) > 1 else ''}")
