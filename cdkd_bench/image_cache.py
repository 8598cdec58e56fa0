"""The decoded-image cache of file-backed domains: uint8 arrays on disk, memory-mapped when read.

A domain read from files (``Domain.locate``) is decoded once, at the suite's stored
resolution, into a folder holding ``images.npy`` (every train image, then every test image,
``(N, 3, S, S)`` uint8), ``labels.npy`` and ``manifest.json``. The folder's name carries a
key of the source files' paths, sizes and modification times and of the resolution, so a
changed, added or removed file makes a new cache. It is built in a temporary folder and
renamed into place only when complete, the manifest written last: a killed decode leaves a
temporary folder (swept at the next build) and never a cache that reads as good.

Reading maps the arrays (``mmap_mode="c"``: writable tensors, the file never changes), so
opening a 30 GB domain costs nothing and memory holds only the pages a batch touches.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from cdkd_bench.api import DataContext, Domain, DomainData, DomainFiles, ImageFiles
from cdkd_bench.cache import cache_lock
from cdkd_bench.errors import UserError
from cdkd_bench.mapped import read_randomly
from cdkd_bench.spec import canonical_json

log = logging.getLogger("cdkd_bench")

FORMAT = "cdkd-bench image cache v1"
DECODE_CHUNK = 256
"""Images decoded per hand-off to the writer (threads decode them; PIL releases the GIL while it decodes)."""


@dataclass(frozen=True)
class CachedDomain:
    """A file-backed domain as cached: its arrays (memory-mapped) and what the manifest says about them."""

    data: DomainData
    content_hash: str
    folder: Path


def source_key(files: DomainFiles, data_root: Path | None) -> list[list[Any]]:
    """Each source file's path (relative to the data root where it lies below it), size and modification time."""
    rows = []
    for path in files.sources:
        try:
            stat = path.stat()
        except OSError as exc:
            raise UserError(f"cannot read {str(path)!r} ({exc.strerror or exc})") from None
        rows.append([_relative(path, data_root), stat.st_size, stat.st_mtime_ns])
    return sorted(rows)


def _relative(path: Path, data_root: Path | None) -> str:
    if data_root is not None:
        try:
            return path.resolve().relative_to(data_root.resolve()).as_posix()
        except ValueError:
            pass
    return str(path)


def cache_folder(domain: Domain, image_size: int, cache_dir: Path, identity: dict[str, Any]) -> Path:
    key = hashlib.sha256(canonical_json(identity).encode()).hexdigest()[:16]
    return cache_dir / "data" / f"{domain.name}-v{domain.version}-{image_size}px-{key}"


def locate(domain: Domain, context: DataContext) -> DomainFiles:
    assert domain.locate is not None
    files = domain.locate(context)
    if not isinstance(files, DomainFiles):
        raise UserError(f"domain {domain.name!r}: locate returned {type(files).__name__}, not DomainFiles")
    if (files.train is None) != (files.test is None):
        raise UserError(f"domain {domain.name!r}: locate must list both splits' image files or neither")
    if files.train is None and domain.load is None:
        raise UserError(f"domain {domain.name!r} lists no image files and has no `load` to decode its sources")
    return files


def load_file_domain(domain: Domain, image_size: int, cache_dir: Path, data_root: Path | None, packages: dict[str, str]) -> CachedDomain:
    """The domain's cached images, decoding them first when the cache is missing, partial or stale."""
    context, files, identity, folder = _where(domain, image_size, cache_dir, data_root, packages)
    cached = read_cache(folder, identity)
    if cached is not None:
        return cached
    with cache_lock(folder):
        cached = read_cache(folder, identity)  # another process may have built it meanwhile
        if cached is not None:
            return cached
        _sweep(folder, domain, image_size)
        build_cache(domain, files, context, image_size, folder, identity)
    cached = read_cache(folder, identity)
    if cached is None:  # pragma: no cover - just written and renamed into place
        raise UserError(f"the image cache {str(folder)!r} could not be read back after it was written; delete it and run again")
    return cached


def peek(domain: Domain, image_size: int, cache_dir: Path, data_root: Path | None,
         packages: dict[str, str]) -> tuple[DomainFiles, CachedDomain | None]:
    """The domain's files and its cache if that is built and current; never decodes (raises ``UserError`` when
    the files are missing)."""
    _, files, identity, folder = _where(domain, image_size, cache_dir, data_root, packages)
    return files, read_cache(folder, identity)


def _where(domain: Domain, image_size: int, cache_dir: Path, data_root: Path | None,
           packages: dict[str, str]) -> tuple[DataContext, DomainFiles, dict[str, Any], Path]:
    """The domain's files, the identity its cache must record, and the cache's folder."""
    context = DataContext(data_root, cache_dir / "raw" / domain.name)
    files = locate(domain, context)
    identity = {"format": FORMAT, "domain": domain.name, "version": domain.version, "image_size": image_size,
                "packages": packages, "sources": source_key(files, data_root)}
    return context, files, identity, cache_folder(domain, image_size, cache_dir, identity)


def read_cache(folder: Path, identity: dict[str, Any]) -> CachedDomain | None:
    """The cache in ``folder`` if it is complete and is what ``identity`` names; None otherwise."""
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        return None
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        images = np.load(folder / "images.npy", mmap_mode="c")
        read_randomly(images)
        labels = np.load(folder / "labels.npy")
    except (OSError, ValueError) as exc:
        log.warning("image cache %s is unreadable (%s); rebuilding it", folder, exc)
        return None
    if not isinstance(manifest, dict) or manifest.get("identity") != json.loads(canonical_json(identity)):
        return None
    train, test = manifest.get("train"), manifest.get("test")
    if not isinstance(train, int) or not isinstance(test, int) or images.shape[0] != train + test \
            or labels.shape != (train + test,) or images.dtype != np.uint8 or images.ndim != 4:
        log.warning("image cache %s does not hold the %s images its manifest names; rebuilding it", folder, (train, test))
        return None
    x = torch.from_numpy(images)
    y = torch.from_numpy(labels.astype(np.int64))
    data = DomainData(x[:train], y[:train], x[train:], y[train:])
    cached = CachedDomain(data, str(manifest["content_sha256"]), folder)
    _RECENT[id(data)] = cached
    while len(_RECENT) > RECENT_KEPT:
        del _RECENT[next(iter(_RECENT))]
    return cached


RECENT_KEPT = 16
_RECENT: dict[int, CachedDomain] = {}
"""The caches this process read lately, by the id of their DomainData (each entry keeps its data alive)."""


def cached_domain_of(data: DomainData) -> CachedDomain | None:
    """The cache ``data`` was just read from, so its manifest hash is known without listing the source files again."""
    cached = _RECENT.get(id(data))
    return cached if cached is not None and cached.data is data else None


def _sweep(folder: Path, domain: Domain, image_size: int) -> None:
    """Remove this domain's temporary folders (killed builds) and caches of older source files (held under the lock)."""
    parent = folder.parent
    if not parent.is_dir():
        return
    stem = f"{domain.name}-v{domain.version}-{image_size}px-"
    for other in parent.iterdir():
        name = other.name.lstrip(".")
        if other.is_dir() and name.startswith(stem) and other != folder:
            shutil.rmtree(other, ignore_errors=True)


def build_cache(domain: Domain, files: DomainFiles, context: DataContext, image_size: int, folder: Path,
                identity: dict[str, Any]) -> None:
    """Decode every image into a temporary folder beside ``folder``, then rename it into place."""
    tmp = folder.parent / f".{folder.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        if files.train is not None and files.test is not None:
            counts, digest = _decode_files(domain, files.train, files.test, image_size, tmp)
        else:
            counts, digest = _decode_arrays(domain, context, image_size, tmp)
        manifest = {"format": FORMAT, "identity": identity, "train": counts[0], "test": counts[1], "content_sha256": digest}
        (tmp / "manifest.json").write_text(canonical_json(manifest), encoding="utf-8")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except OSError as exc:
        raise UserError(f"cannot write the image cache {str(folder)!r} ({exc.strerror or exc}); free some space or "
                        "choose another --cache-dir") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _decode_files(domain: Domain, train: ImageFiles, test: ImageFiles, size: int, out: Path) -> tuple[tuple[int, int], str]:
    from cdkd_bench.data import domain_check_labels

    paths = train.paths + test.paths
    labels = np.asarray(train.labels + test.labels, dtype=np.int64)
    domain_check_labels(domain, labels, "listed")
    images = np.lib.format.open_memmap(out / "images.npy", mode="w+", dtype=np.uint8, shape=(len(paths), 3, size, size))
    sha = hashlib.sha256()
    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool, \
            tqdm(total=len(paths), desc=f"decoding {domain.name}", unit="img", leave=False, mininterval=0.5) as bar:
        for start, block in _blocks(pool, paths, size):
            images[start : start + len(block)] = block
            sha.update(block.tobytes())
            bar.update(len(block))
    images.flush()
    del images
    np.save(out / "labels.npy", labels)
    sha.update(labels.tobytes())
    return (len(train.paths), len(test.paths)), sha.hexdigest()


def _blocks(pool: ThreadPoolExecutor, paths: tuple[Path, ...], size: int) -> Iterator[tuple[int, np.ndarray]]:
    for start in range(0, len(paths), DECODE_CHUNK):
        chunk = paths[start : start + DECODE_CHUNK]
        yield start, np.stack(list(pool.map(lambda p: decode_image(p, size), chunk)))


def decode_image(path: Path, size: int) -> np.ndarray:
    """One image file as ``(3, size, size)`` uint8 RGB: resized to a square with PIL's bilinear filter,
    as the domain-adaptation literature's ``Resize((256, 256))`` does before its crops."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise UserError(f"image {str(path)!r} cannot be decoded ({type(exc).__name__}: {exc}); replace or remove it") from None
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)


def _decode_arrays(domain: Domain, context: DataContext, size: int, out: Path) -> tuple[tuple[int, int], str]:
    """A domain that decodes its own format (IDX, LIBSVM, .mat): resized in chunks into the memory map."""
    from cdkd_bench.data import check_domain_data, resize_rgb

    assert domain.load is not None
    raw = check_domain_data(domain, domain.load(context))
    total = len(raw.train_y) + len(raw.test_y)
    images = np.lib.format.open_memmap(out / "images.npy", mode="w+", dtype=np.uint8, shape=(total, 3, size, size))
    sha = hashlib.sha256()
    row = 0
    for split in (raw.train_x, raw.test_x):
        for start in range(0, len(split), 4096):
            block = resize_rgb(split[start : start + 4096], size).numpy()
            images[row : row + len(block)] = block
            sha.update(block.tobytes())
            row += len(block)
    images.flush()
    del images
    labels = torch.cat([raw.train_y, raw.test_y]).long().numpy()
    np.save(out / "labels.npy", labels)
    sha.update(labels.tobytes())
    return (len(raw.train_y), len(raw.test_y)), sha.hexdigest()


def verify_cache(cached: CachedDomain) -> str | None:
    """Re-hash every cached byte: None when it matches the manifest, else what is wrong."""
    sha = hashlib.sha256()
    x = cached.data
    for split in (x.train_x, x.test_x):
        for start in range(0, len(split), 4096):
            sha.update(split[start : start + 4096].numpy().tobytes())
    sha.update(torch.cat([x.train_y, x.test_y]).numpy().tobytes())
    if sha.hexdigest() != cached.content_hash:
        return f"the image cache {str(cached.folder)!r} does not match its recorded content hash"
    return None
