"""Memory-mapped cache arrays read in random batches: no read-ahead, and pages unmapped once copied out."""

from __future__ import annotations

import mmap
import weakref

import numpy as np
import torch

_MAPPINGS: list[tuple[int, int, weakref.ref[mmap.mmap]]] = []
"""(first address, end address, mapping) of the cache arrays this process maps (weakly: a dropped array is unmapped)."""


def read_randomly(images: np.ndarray) -> None:
    """Tell the kernel batches read rows in random order (no read-ahead around each row), and remember the
    mapping so :func:`release_pages` can unmap what a batch touched."""
    handle = getattr(images, "_mmap", None)
    if handle is None:
        return
    if hasattr(mmap, "MADV_RANDOM"):
        handle.madvise(mmap.MADV_RANDOM)
    # numpy maps from the page boundary at or below the array's offset in the file (the .npy header precedes it).
    start = images.ctypes.data - int(getattr(images, "offset", 0)) % mmap.ALLOCATIONGRANULARITY
    _MAPPINGS[:] = [m for m in _MAPPINGS if m[2]() is not None]
    _MAPPINGS.append((start, start + len(handle), weakref.ref(handle)))


def release_pages(storage: torch.Tensor) -> bool:
    """Unmap the pages of the cache file ``storage`` lies in, once a batch has been copied out of it.

    The file stays in the page cache (the kernel's to keep or reclaim); the process only stops mapping
    it. Without this, the kernel maps whole large folios around every row read, and the resident
    memory of a process streaming a 30 GB domain grows towards the file's size. Returns whether
    ``storage`` lies in a cache mapping.
    """
    if not hasattr(mmap, "MADV_DONTNEED"):
        return False
    address = storage.data_ptr()
    for start, end, ref in _MAPPINGS:
        handle = ref()
        if handle is not None and start <= address < end and not handle.closed:
            handle.madvise(mmap.MADV_DONTNEED)  # a private, never written mapping: nothing is lost
            return True
    return False
