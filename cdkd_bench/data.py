"""Shared data plumbing: the on-disk tensor cache, fixed splits, and batch streams. No datasets."""

from __future__ import annotations

import importlib.metadata
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from cdkd_bench.api import DataContext, Domain, DomainData
from cdkd_bench.cache import cache_lock, content_hash, load_verified, save_verified
from cdkd_bench.errors import UserError
from cdkd_bench.locations import CACHE_ENV, DATA_ENV, default_cache_dir, default_data_root  # noqa: F401 - their old home

VAL_FRACTION = 0.1
# Fixed for the whole project: every method, seed and teacher sees the same source-val split.
SPLIT_SEED = 20261127


def _check(domain: Domain, data: Any) -> DomainData:
    if not isinstance(data, DomainData):
        raise UserError(f"domain {domain.name!r} returned {type(data).__name__}, not DomainData")
    for split in ("train", "test"):
        x, y = getattr(data, f"{split}_x"), getattr(data, f"{split}_y")
        if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] not in (1, 3):
            raise UserError(f"domain {domain.name!r}: {split} images must be uint8 (N, 1 or 3, H, W), got {x.dtype} {tuple(x.shape)}")
        # A train split may be empty: a test-only domain (a held-out evaluation set) can be a target, never a source.
        if len(x) != len(y) or (len(x) == 0 and split == "test"):
            raise UserError(f"domain {domain.name!r}: {split} split has {len(x)} images and {len(y)} labels")
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= domain.num_classes):
            raise UserError(f"domain {domain.name!r}: {split} labels must lie in [0, {domain.num_classes})")
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
            _check(domain, DomainData(**tensors))
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
        raw = _check(domain, domain.load(DataContext(data_root, cache_dir / "raw" / domain.name)))
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
    """uint8 images to the float range the networks see, [-1, 1], stored channels-last once
    (the layout convolutions run fastest in, on the CPU and on CUDA; batches keep it)."""
    return x.float().div_(127.5).sub_(1.0).contiguous(memory_format=torch.channels_last)


@dataclass
class Split:
    """Images already converted for the network, with labels, on the run's device."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)


class BatchStream:
    """Endless shuffled batches: each epoch is a fresh permutation from a seeded generator."""

    def __init__(self, split: Split, batch_size: int, seed: int) -> None:
        self.split = split
        self.batch_size = min(batch_size, len(split))
        # On the split's device, so a new epoch's order needs no copy from the host.
        self.generator = torch.Generator(device=split.x.device).manual_seed(seed)
        self._order = torch.empty(0, dtype=torch.long)
        self._pos = 0

    def next(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The next batch's images, labels, and their indices into the split."""
        if self._pos + self.batch_size > len(self._order):
            self._order = torch.randperm(len(self.split), generator=self.generator, device=self.split.x.device)
            self._pos = 0
        idx = self._order[self._pos : self._pos + self.batch_size]
        self._pos += self.batch_size
        return self.split.x[idx], self.split.y[idx], idx
