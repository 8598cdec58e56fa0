"""Colour textures from installed packages, split into the sources train images use and those test images use.

Each side gets photographs, renders of measured data and procedural textures, so train and
test backgrounds differ in source but not in kind: a model cannot pass the test by having
seen the very photograph (MNIST-M itself crops train and test from different BSDS500 images).
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from .embedded_common import read_shipped

TRAIN_TEXTURES = ("china.jpg", "grace_hopper.jpg", "jacksboro_fault_dem.npz", "pink_noise", "marble")
TEST_TEXTURES = ("flower.jpg", "Minduka_Present_Blue_Pack.png", "topobathy.npz", "s1045.ima.gz", "cells")
# A source is cropped at one of these scales, so crops differ in grain as well as place.
SCALES = (0.6, 1.0, 1.6)
PROCEDURAL_SIZE = 256


def sklearn_image_folder() -> Path:
    """Where scikit-learn keeps its sample photographs (tests point this at a temporary folder)."""
    import sklearn.datasets

    return Path(sklearn.datasets.__file__).parent / "images"


def matplotlib_sample_folder() -> Path:
    """Where matplotlib keeps its sample data (tests point this at a temporary folder)."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data"


def _colormap(values: np.ndarray, name: str) -> np.ndarray:
    """Values in [0, 1] through a matplotlib colormap → uint8 RGB."""
    import matplotlib

    rgba = matplotlib.colormaps[name](np.clip(values, 0, 1))
    return (rgba[..., :3] * 255).round().astype(np.uint8)


def _stretch(values: np.ndarray) -> np.ndarray:
    """Robust rescale to [0, 1] (2nd to 98th percentile), so outliers do not wash a render out."""
    lo, hi = np.percentile(values, [2, 98])
    return np.clip((values - lo) / max(hi - lo, 1e-9), 0, 1)


def _photo(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        # Transparent parts of the PNG become mid-grey rather than black.
        rgba = image.convert("RGBA")
        flat = Image.new("RGBA", rgba.size, (128, 128, 128, 255))
        flat.alpha_composite(rgba)
        rgb = flat.convert("RGB")
    if min(rgb.size) < 256:  # the 128-pixel PNG: enlarge so crops at every scale fit
        rgb = rgb.resize((rgb.width * 2, rgb.height * 2), Image.Resampling.BICUBIC)
    return np.asarray(rgb)


def _shaded_relief(elevation: np.ndarray, cmap: str) -> np.ndarray:
    """An elevation grid as a hill-shaded colour map, the way matplotlib's own examples show it."""
    import matplotlib
    from matplotlib.colors import LightSource

    values = _stretch(elevation.astype(np.float64))
    shaded = LightSource(azdeg=315, altdeg=45).shade(values, cmap=matplotlib.colormaps[cmap], vert_exag=20, blend_mode="overlay")
    return (shaded[..., :3] * 255).round().astype(np.uint8)


def _jacksboro(path: Path) -> np.ndarray:
    with np.load(path) as data:
        return _shaded_relief(data["elevation"], "gist_earth")


def _topobathy(path: Path) -> np.ndarray:
    with np.load(path) as data:
        topo = data["topo"].astype(np.float32)
    # The grid is small (91x120): enlarge it smoothly before shading.
    big = np.asarray(Image.fromarray(topo, mode="F").resize((topo.shape[1] * 3, topo.shape[0] * 3), Image.Resampling.BICUBIC))
    return _shaded_relief(big, "terrain")


def _mri(path: Path) -> np.ndarray:
    with gzip.open(path) as f:
        # A 256x256 slice of big-endian 16-bit values, as matplotlib's MRI example reads it.
        slice_ = np.frombuffer(f.read(), dtype=">u2").reshape(256, 256).astype(np.float64)
    return _colormap(_stretch(slice_), "viridis")


def _fractal_noise(rng: np.random.Generator, size: int, slope: float) -> np.ndarray:
    """A (size, size) field with a 1/f^slope amplitude spectrum, scaled to [0, 1].

    Slope 1 is pink noise (grainy clouds), 2 is brown noise (smooth hills).
    """
    freq = np.hypot(*np.meshgrid(np.fft.fftfreq(size), np.fft.fftfreq(size), indexing="ij"))
    spectrum = (rng.normal(size=(size, size)) + 1j * rng.normal(size=(size, size))) / np.maximum(freq, 1 / size) ** slope
    return _stretch(np.fft.ifft2(spectrum).real)


def _procedural_pink_noise() -> np.ndarray:
    rng = np.random.default_rng(10)
    hue, light = _fractal_noise(rng, PROCEDURAL_SIZE, 1.5), _fractal_noise(rng, PROCEDURAL_SIZE, 1.0)
    return (_colormap(hue, "Spectral") * (0.5 + 0.5 * light[..., None])).astype(np.uint8)


def _procedural_marble() -> np.ndarray:
    """Stripes bent by noise (a marble or wood grain), in copper tones."""
    rng = np.random.default_rng(11)
    y, x = np.mgrid[0:PROCEDURAL_SIZE, 0:PROCEDURAL_SIZE] / PROCEDURAL_SIZE
    angle = rng.uniform(0, np.pi)
    phase = 2 * np.pi * 9 * (x * np.cos(angle) + y * np.sin(angle)) + 8 * _fractal_noise(rng, PROCEDURAL_SIZE, 2.0)
    return _colormap(0.5 + 0.5 * np.sin(phase), "copper")


def _procedural_cells() -> np.ndarray:
    """Voronoi cells in flat pastel colours with dark borders, like cobbles or tiles."""
    rng = np.random.default_rng(12)
    points = rng.uniform(0, PROCEDURAL_SIZE, (120, 2))
    y, x = np.mgrid[0:PROCEDURAL_SIZE, 0:PROCEDURAL_SIZE]
    dist = np.hypot(y[..., None] - points[:, 0], x[..., None] - points[:, 1])
    nearest = np.sort(dist, axis=-1)[..., :2]
    owner = dist.argmin(axis=-1)
    colours = _colormap(rng.uniform(0, 1, len(points)), "Set3").astype(np.float64)
    border = np.clip((nearest[..., 1] - nearest[..., 0]) / 2, 0, 1)[..., None]
    return (colours[owner] * (0.3 + 0.7 * border)).astype(np.uint8)


def _from_sklearn(name: str, read: Callable[[Path], np.ndarray]) -> Callable[[], np.ndarray]:
    # The folder is looked up at each call (not bound here), so tests can point it elsewhere.
    return lambda: read_shipped(sklearn_image_folder() / name, "scikit-learn", read)


def _from_matplotlib(name: str, read: Callable[[Path], np.ndarray]) -> Callable[[], np.ndarray]:
    return lambda: read_shipped(matplotlib_sample_folder() / name, "matplotlib", read)


_LOADERS: dict[str, Callable[[], np.ndarray]] = {
    "china.jpg": _from_sklearn("china.jpg", _photo),
    "flower.jpg": _from_sklearn("flower.jpg", _photo),
    "grace_hopper.jpg": _from_matplotlib("grace_hopper.jpg", _photo),
    "Minduka_Present_Blue_Pack.png": _from_matplotlib("Minduka_Present_Blue_Pack.png", _photo),
    "jacksboro_fault_dem.npz": _from_matplotlib("jacksboro_fault_dem.npz", _jacksboro),
    "topobathy.npz": _from_matplotlib("topobathy.npz", _topobathy),
    "s1045.ima.gz": _from_matplotlib("s1045.ima.gz", _mri),
    "pink_noise": _procedural_pink_noise,
    "marble": _procedural_marble,
    "cells": _procedural_cells,
}


def load_sources(names: tuple[str, ...]) -> list[list[np.ndarray]]:
    """Per source, its (H, W, 3) uint8 image at each of SCALES."""
    sources = []
    for name in names:
        image = Image.fromarray(_LOADERS[name]())
        sources.append([
            np.asarray(image.resize((round(image.width * s), round(image.height * s)), Image.Resampling.BILINEAR))
            for s in SCALES
        ])
    return sources


def random_crops(sources: list[list[np.ndarray]], n: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` crops (n, size, size, 3) uint8, each from a uniformly drawn source, scale, place and mirroring.

    Also returns which source each crop came from.
    """
    which = rng.integers(len(sources), size=n)
    scale = rng.integers(len(SCALES), size=n)
    corner = rng.random((n, 2))
    mirror = rng.random(n) < 0.5
    crops = np.empty((n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        image = sources[which[i]][scale[i]]
        top = int(corner[i, 0] * (image.shape[0] - size + 1))
        left = int(corner[i, 1] * (image.shape[1] - size + 1))
        crop = image[top : top + size, left : left + size]
        crops[i] = crop[:, ::-1] if mirror[i] else crop
    return crops, which
