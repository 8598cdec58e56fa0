"""Cache files that can be trusted: each records what it is and a hash of its content.

A cache file is written atomically, under a per-file lock so concurrent processes build it
once, and verified whenever it is read: a file that is missing, unreadable, someone else's
(another teacher's weights copied over it), edited (fewer images, shuffled labels) or
otherwise invalid is rebuilt, and the reason is said once. A file that cannot be replaced
(a folder in its place, no permission) is a user error that names the path to delete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from cdkd_bench.errors import UserError
from cdkd_bench.folders import replace_atomically
from cdkd_bench.spec import canonical_json

try:  # POSIX; elsewhere caches are still verified, only not locked between processes
    import fcntl
except ImportError:  # pragma: no cover - non-POSIX
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("cdkd_bench")

FORMAT = "cdkd-bench cache v1"


def _plain(identity: Mapping[str, Any]) -> dict[str, Any]:
    """The identity as JSON would give it back (tuples become lists), so comparisons are exact."""
    return json.loads(canonical_json(dict(identity)))  # type: ignore[no-any-return]


def content_hash(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order."""
    sha = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        sha.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        sha.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return sha.hexdigest()


def temporary_files(path: Path) -> list[Path]:
    """Leftovers of :func:`atomic_save` for ``path`` whose writer died before the rename."""
    return sorted(path.parent.glob(f".{path.name}.*.tmp")) if path.parent.is_dir() else []


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file, then rename it over ``path``: readers never see half a file."""
    replace_atomically(path, lambda tmp: torch.save(obj, tmp), "delete it and run again, or choose another --cache-dir")


@contextlib.contextmanager
def cache_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (a sibling ``.lock`` file) while building it.

    The lock dies with its process, so a killed builder never blocks the next one. Stale
    temporary files of ``path`` are removed once the lock is held: nobody else can be
    writing them then.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path.parent / f"{path.name}.lock", "a+b")  # noqa: SIM115 - held for the with-block
    except OSError as exc:
        raise UserError(f"cannot write to the cache folder {str(path.parent)!r} ({exc.strerror or exc}); "
                        "choose another --cache-dir") from None
    try:
        if fcntl is not None:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("waiting for another process that is building %s", path.name)
                fcntl.flock(handle, fcntl.LOCK_EX)
        for leftover in temporary_files(path):  # files, or folders of a multi-file cache (see image_cache)
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
        yield
    finally:
        handle.close()  # closing releases the lock


def is_locked(path: Path) -> bool:
    """Whether another process holds ``path``'s build lock right now."""
    lock = path.parent / f"{path.name}.lock"
    if fcntl is None or not lock.exists():
        return False
    with open(lock, "a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False


def sweep_temporary_files(folder: Path) -> int:
    """Remove temporary files left in ``folder`` by killed writers; returns how many."""
    removed = 0
    if not folder.is_dir():
        return removed
    for leftover in folder.glob(".*.tmp"):
        target = folder / leftover.name[1:].rsplit(".", 2)[0]
        if not is_locked(target):  # a live builder's file is left alone
            leftover.unlink(missing_ok=True)
            removed += 1
    return removed


def save_verified(path: Path, identity: Mapping[str, Any], tensors: Mapping[str, torch.Tensor], extra: Mapping[str, Any]) -> None:
    """Save ``tensors`` (and small JSON-like ``extra``) with their identity and content hash."""
    cpu = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}  # the standard layout, whatever the model used
    atomic_save({"format": FORMAT, "identity": _plain(identity), "content_sha256": content_hash(cpu),
                 "tensors": cpu, "extra": dict(extra)}, path)


def load_verified(
    path: Path,
    identity: Mapping[str, Any],
    check: Callable[[dict[str, torch.Tensor], dict[str, Any]], str | None] = lambda _t, _e: None,
    report: bool = True,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """The cached (tensors, extra) if the file is exactly what ``identity`` names, else None.

    ``check`` may reject content that hashes correctly but cannot be used (it returns the
    reason). A file present but rejected is said (unless ``report`` is off: the caller's
    second look, under the lock, after it already said so), then ignored: the caller
    rebuilds and overwrites it.
    """
    if not path.exists() and not path.is_symlink():
        return None
    if path.is_dir():
        raise UserError(f"cache file {str(path)!r} is a folder; delete it and run again")
    payload, problem = _read(path, identity, check)
    if problem is None:
        return payload["tensors"], payload["extra"]
    if report:
        log.warning("cache file %s %s; rebuilding it", path, problem)
    return None


def _read(
    path: Path, identity: Mapping[str, Any], check: Callable[[dict[str, torch.Tensor], dict[str, Any]], str | None]
) -> tuple[Any, str | None]:
    """The file's payload and what is wrong with it (None when it can be used)."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - truncated, foreign or unreadable files are all "not usable"
        return None, "is unreadable (truncated, not a cdkd-bench cache file, or no permission)"
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        return None, "is not a cdkd-bench cache file of this version"
    if payload.get("identity") != _plain(identity):
        return None, f"holds something else ({_difference(payload.get('identity'), _plain(identity))})"
    tensors, extra = payload.get("tensors"), payload.get("extra")
    if not isinstance(tensors, dict) or not isinstance(extra, dict) or not all(isinstance(t, torch.Tensor) for t in tensors.values()):
        return None, "is malformed"
    if content_hash(tensors) != payload.get("content_sha256"):
        return None, "does not match its recorded content hash (it was modified or damaged)"
    return payload, check(tensors, extra)


def _difference(found: Any, expected: Mapping[str, Any]) -> str:
    if not isinstance(found, dict):
        return "no identity recorded"
    keys = sorted(k for k in {*found, *expected} if found.get(k) != expected.get(k))
    return ", ".join(f"{k}={found.get(k)!r} where {expected.get(k)!r} was expected" for k in keys[:3])


def non_finite(tensors: Mapping[str, torch.Tensor]) -> str | None:
    """A reason to reject tensors holding NaN or infinity, naming the first such tensor."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return f"holds non-finite values in {name!r}"
    return None
