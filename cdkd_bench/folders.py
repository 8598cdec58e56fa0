"""Folders the user names: checked for writing before any work starts, not after it."""

from __future__ import annotations

import os
import tempfile
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


def write_text_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one step, so a reader never sees half a page."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        raise UserError(f"cannot write {str(path)!r} ({exc.strerror or exc})") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
