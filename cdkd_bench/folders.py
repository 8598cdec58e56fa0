"""Folders the user names: checked for writing before any work starts, not after it."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from cdkd_bench.errors import UserError


def writable_folder(path: Path, purpose: str, option: str) -> Path:
    """Create ``path`` if needed and prove a file can be written there; else one sentence naming ``option``."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".cdkd-bench-write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(f"cannot write {purpose} to {str(path)!r} ({exc.strerror or exc}); choose another {option}") from None
    return path


def replace_atomically(path: Path, write: Callable[[str], object], hint: str) -> None:
    """Write through ``write(temporary_name)`` beside ``path``, then rename over it: readers never see half a file.

    A failure is one sentence ending with ``hint`` (what the user can do about it).
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise UserError(f"cannot write to the folder {str(path.parent)!r} ({exc.strerror or exc}); {hint}") from None
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise UserError(f"cannot write {str(path)!r} ({exc.strerror or exc}); {hint}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text_atomically(path: Path, text: str) -> None:
    replace_atomically(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), "choose another --out-dir")
