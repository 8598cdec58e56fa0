"""Shared data plumbing: the on-disk tensor cache, fixed splits, and batch streams. No datasets."""

from __future__ import annotations

import importlib.metadata
import zlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from cdkd_bench.api import DataContext, Domain, DomainData
from cdkd_bench.cache import cache_lock, content_hash, load_verified, save_verified
from cdkd_bench.errors import UserError
from cdkd_bench.image_cache import cached_domain_of, load_file_domain
from cdkd_bench.images import Images, centre_crop, to_network_range
from cdkd_bench.locations import CACHE_ENV, DATA_ENV, default_cache_dir, default_data_root  # noqa: F401 - their old home

VAL_FRACTION = 0.1
# Fixed for the whole project: every method, seed and teacher sees the same source-val split.
SPLIT_SEED = 20261127


def domain_check_labels(domain: Domain, labels: Any, split: str) -> None:
    """Refuse labels outside the domain's classes (a list file naming class 40 of 31, say)."""
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= domain.num_classes):
        raise UserError(f"domain {domain.name!r}: {split} labels must lie in [0, {domain.num_classes}), "
                        f"found {int(labels.min())}..{int(labels.max())}")


def check_domain_data(domain: Domain, data: Any) -> DomainData:
    """The domain's data if it has the shape the host expects; else one sentence saying what is wrong."""
    if not isinstance(data, DomainData):
        raise UserError(f"domain {domain.name!r} returned {type(data).__name__}, not DomainData")
    for split in ("train", "test"):
        x, y = getattr(data, f"{split}_x"), getattr(data, f"{split}_y")
        if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] not in (1, 3):
            raise UserError(f"domain {domain.name!r}: {split} images must be uint8 (N, 1 or 3, H, W), got {x.dtype} {tuple(x.shape)}")
        # A train split may be empty: a test-only domain (a held-out evaluation set) can be a target, never a source.
        if len(x) != len(y) or (len(x) == 0 and split == "test"):
            raise UserError(f"domain {domain.name!r}: {split} split has {len(x)} images and {len(y)} labels")
        domain_check_labels(domain, y, split)
    groups = data.train_groups
    if groups is not None and (groups.dtype != torch.int64 or groups.shape != data.train_y.shape):
        raise UserError(f"domain {domain.name!r}: train_groups must be int64 with one entry per train image, "
                        f"got {groups.dtype} {tuple(groups.shape)}")
    return data


def resize_rgb(x: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 images to 3 channels and ``size`` x ``size`` (grey is repeated, not tinted)."""
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        x = x.round().clamp(0, 255).to(torch.uint8)
    return x.contiguous()


def domain_cache_path(domain: Domain, image_size: int, cache_dir: Path) -> Path:
    return cache_dir / "data" / f"{domain.name}-v{domain.version}-{image_size}px.pt"


def _usable_domain_tensors(domain: Domain) -> Callable[[dict[str, torch.Tensor], dict[str, Any]], str | None]:
    def check(tensors: dict[str, torch.Tensor], _extra: dict[str, Any]) -> str | None:
        if not set(_SPLIT_FIELDS) <= set(tensors) <= {*_SPLIT_FIELDS, "train_groups"}:
            return "is missing a split"
        try:
            check_domain_data(domain, DomainData(**tensors))
        except UserError as exc:
            return f"is malformed ({exc})"
        return None

    return check


_SPLIT_FIELDS = ("train_x", "train_y", "test_x", "test_y")


def generator_packages(domain: Domain) -> dict[str, str]:
    """The installed versions of the packages the domain's images depend on ("absent" when not installed)."""
    versions = {}
    for name in domain.packages:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def data_hash(data: DomainData) -> str:
    """The data's identity: a hash of its images, labels and groups exactly as the networks will see them."""
    return content_hash(_tensors(data))[:16]


def _tensors(data: DomainData) -> dict[str, torch.Tensor]:
    tensors = {name: getattr(data, name) for name in _SPLIT_FIELDS}
    if data.train_groups is not None:
        tensors["train_groups"] = data.train_groups
    return tensors


def load_domain(domain: Domain, image_size: int, cache_dir: Path, data_root: Path | None) -> DomainData:
    """The domain's images at ``image_size`` as uint8 RGB, decoded once and cached on disk.

    The cache file records the domain, its version, the size it holds and the versions of
    the packages its images come from (a new font renderer makes new images), and a hash
    of its content; a file that does not match is rebuilt (see :mod:`cdkd_bench.cache`).
    """
    if domain.locate is not None:  # read from files: decoded once into a memory-mapped cache
        return load_file_domain(domain, image_size, cache_dir, data_root, generator_packages(domain)).data
    path = domain_cache_path(domain, image_size, cache_dir)
    identity = {"kind": "domain", "domain": domain.name, "version": domain.version, "image_size": image_size,
                "packages": generator_packages(domain)}
    check = _usable_domain_tensors(domain)
    cached = load_verified(path, identity, check)
    if cached is not None:
        return DomainData(**cached[0])
    with cache_lock(path):
        cached = load_verified(path, identity, check, report=False)  # another process may have built it meanwhile
        if cached is not None:
            return DomainData(**cached[0])
        assert domain.load is not None
        raw = check_domain_data(domain, domain.load(DataContext(data_root, cache_dir / "raw" / domain.name)))
        data = DomainData(
            resize_rgb(raw.train_x, image_size), raw.train_y.long(), resize_rgb(raw.test_x, image_size), raw.test_y.long(),
            raw.train_groups,
        )
        save_verified(path, identity, _tensors(data), {})
    return data


_FINGERPRINTS: dict[tuple[Any, ...], tuple[str, int, int]] = {}


def domain_fingerprint(domain: Domain, image_size: int, cache_dir: Path, data_root: Path | None,
                       data: DomainData | None = None) -> str:
    """:func:`data_hash` of the domain as cached, remembered while its cache file is unchanged.

    Pass ``data`` when it was just loaded from the cache, so it is not read again.
    """
    return _fingerprint(domain, image_size, cache_dir, data_root, data)[0]


def domain_split_sizes(domain: Domain, image_size: int, cache_dir: Path, data_root: Path | None) -> tuple[int, int]:
    """How many (train, test) images the cached domain holds, remembered with its fingerprint."""
    _, train, test = _fingerprint(domain, image_size, cache_dir, data_root, None)
    return train, test


def _fingerprint(domain: Domain, image_size: int, cache_dir: Path, data_root: Path | None,
                 data: DomainData | None) -> tuple[str, int, int]:
    if domain.locate is not None:  # the manifest's hash, recorded while decoding: a large domain is never re-read
        # `data` just read from the cache names it: the source files are not listed and stat'ed a second time.
        cached = (cached_domain_of(data) if data is not None else None) or \
            load_file_domain(domain, image_size, cache_dir, data_root, generator_packages(domain))
        return cached.content_hash[:16], len(cached.data.train_y), len(cached.data.test_y)
    path = domain_cache_path(domain, image_size, cache_dir)
    if data is None and not path.is_file():
        data = load_domain(domain, image_size, cache_dir, data_root)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size, tuple(sorted(generator_packages(domain).items())))
    if key not in _FINGERPRINTS:
        if data is None:
            data = load_domain(domain, image_size, cache_dir, data_root)
        _FINGERPRINTS[key] = (data_hash(data), len(data.train_y), len(data.test_y))
    return _FINGERPRINTS[key]


def validation_split(labels: torch.Tensor, domain_name: str, groups: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Stratified (train, val) indices of a domain's train split, identical for every run.

    With ``groups``, whole groups go to validation (variants of one underlying image never
    sit on both sides), drawn per class until the class's validation tenth is reached.
    """
    generator = torch.Generator().manual_seed(SPLIT_SEED + zlib.crc32(domain_name.encode()))
    if groups is None:
        groups = torch.arange(len(labels))
    train, val = [], []
    for label in labels.unique(sorted=True):
        idx = torch.nonzero(labels == label).flatten()
        members = groups[idx].unique(sorted=True)
        members = members[torch.randperm(len(members), generator=generator)]
        wanted = max(1, int(round(len(idx) * VAL_FRACTION)))
        # Each group's size, in the drawn order: take groups until the tenth is reached.
        sizes = (groups[idx][None, :] == members[:, None]).sum(dim=1)
        taken = int(torch.searchsorted(sizes.cumsum(0), torch.tensor(wanted))) + 1
        in_val = torch.isin(groups[idx], members[:taken])
        val.append(idx[in_val])
        train.append(idx[~in_val])
    return torch.cat(train).sort().values, torch.cat(val).sort().values


def to_input(x: torch.Tensor) -> torch.Tensor:
    """uint8 images to the float range the networks see (see :func:`cdkd_bench.images.to_network_range`)."""
    return to_network_range(x)


@dataclass
class Split:
    """Images with labels on the run's device: ``x`` is a float tensor, or :class:`~cdkd_bench.images.Images`
    that convert uint8 storage per batch; both index the same way."""

    x: torch.Tensor | Images
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)


class BatchStream:
    """Endless shuffled batches: each epoch is a fresh permutation from a seeded generator.

    When the split's images stream from the host (a domain larger than the device holds),
    the next batch is gathered from the memory map into pinned memory by a background
    thread while the current one trains; the order is the same either way. When the split
    crops (a stored size above the input size), ``last_stored`` holds the latest batch at
    the stored size as uint8, for augmentations that crop from it (random resized crops).
    """

    def __init__(self, split: Split, batch_size: int, seed: int) -> None:
        self.split = split
        self.batch_size = min(batch_size, len(split))
        images = split.x if isinstance(split.x, Images) else None
        # On the split's device, so a new epoch's order needs no copy from the host.
        self.generator = torch.Generator(device=split.x.device if images is None or not images.streamed else "cpu").manual_seed(seed)
        self._order = torch.empty(0, dtype=torch.long)
        self._pos = 0
        self._images = images
        self._crops = images is not None and images.size != images.stored_size
        self.last_stored: torch.Tensor | None = None
        self._pool = ThreadPoolExecutor(1) if images is not None and images.streamed else None
        self._pending: tuple[torch.Tensor, Future[torch.Tensor]] | None = None

    def _next_index(self) -> torch.Tensor:
        if self._pos + self.batch_size > len(self._order):
            self._order = torch.randperm(len(self.split), generator=self.generator, device=self.generator.device)
            self._pos = 0
        idx = self._order[self._pos : self._pos + self.batch_size]
        self._pos += self.batch_size
        return idx

    def next(self, plain: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The next batch's images, labels, and their indices into the split.

        With ``plain=False`` a split that crops leaves the images empty (0 images): the caller
        augments ``last_stored`` instead, and converting the centre crop would be wasted work.
        """
        rows: torch.Tensor | None
        if self._images is None:
            idx = self._next_index()
            return self.split.x[idx], self.split.y[idx], idx
        if self._pool is not None:
            if self._pending is None:
                first = self._next_index()
                self._pending = (first, self._pool.submit(self._images.gather, first))
            idx, rows = self._pending[0], self._pending[1].result()
            ahead = self._next_index()
            self._pending = (ahead, self._pool.submit(self._images.gather, ahead))
            rows = rows.to(self._images.device, non_blocking=True)
        else:
            idx = self._next_index()
            rows = self._images.gather(idx) if self._crops else None
        # The uint8 images at their stored size, for augmentations that crop from them (cheapest as bytes).
        self.last_stored = rows if self._crops else None
        if rows is None:
            x = self._images[idx]
        elif plain or not self._crops:
            x = self._images.convert(centre_crop(rows, self._images.size))
        else:
            x = self._images[idx[:0]]
        y = self.split.y[idx.to(self.split.y.device)]
        return x, y, idx.to(self.split.y.device)
