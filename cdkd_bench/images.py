"""A split's images as the networks see them, made batch by batch from uint8 storage.

The storage is the domain's cached uint8 array: on the run's device when it fits
(``RESIDENT_BYTES``; every suite but the largest), else the memory-mapped cache on the
host, gathered per batch into pinned memory and copied without blocking. Indexing gives
float batches in [-1, 1], channels-last, centre-cropped to the input size; ``stored`` gives
the same images at the stored size, for augmentations that crop (random resized crops).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from cdkd_bench.mapped import release_pages

RESIDENT_BYTES = 2 << 30
"""Splits whose uint8 images fit in this many bytes are copied to the device once; larger ones stream."""
CONVERTED_BYTES = 256 << 20
"""Resident splits whose float images fit in this many bytes are converted once, not per batch (small images:
a gather of floats is a third of the time of a gather and conversion of bytes, measured at 32 px)."""


def to_network_range(x: torch.Tensor) -> torch.Tensor:
    """uint8 images to the float range the networks see, [-1, 1], channels-last (the layout
    convolutions run fastest in, on the CPU and on CUDA; batches keep it)."""
    # Reorder the bytes, not the floats: a quarter of the memory traffic of making a float tensor channels-last.
    return x.contiguous(memory_format=torch.channels_last).float().div_(127.5).sub_(1.0)


def centre_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    height, width = x.shape[-2:]
    if (height, width) == (size, size):
        return x
    top, left = (height - size) // 2, (width - size) // 2
    return x[..., top : top + size, left : left + size].contiguous(memory_format=torch.channels_last)


class Images:
    """Images of one split (or several splits back to back), converted per batch.

    ``parts`` are uint8 ``(N, C, H, W)`` tensors read one after another; ``rows``, when
    given, picks and orders rows of the joined parts (a split drawn from a domain's train
    images) without copying a memory map. ``x[index]`` (an index tensor or a slice) is a
    float batch on ``device`` at the input size; ``len(x)``, ``x.device`` and ``x.shape``
    behave as for a tensor of all of them.
    """

    def __init__(self, parts: Sequence[torch.Tensor], device: torch.device, size: int | None = None,
                 rows: torch.Tensor | None = None) -> None:
        if not parts or any(p.dtype != torch.uint8 or p.dim() != 4 for p in parts):
            raise ValueError("Images needs uint8 (N, C, H, W) tensors")
        self.device = device
        self.stored_size = int(parts[0].shape[-1])
        self.size = size or self.stored_size
        count = len(rows) if rows is not None else sum(len(p) for p in parts)
        self.streamed = count * parts[0][0].numel() > RESIDENT_BYTES
        """Whether batches are gathered from the memory-mapped cache on the host rather than held on the device."""
        self._parts, self._rows = list(parts), rows
        self._starts = _starts(self._parts)
        self._converted: torch.Tensor | None = None
        if not self.streamed:  # held on the device, read out of any memory map once
            self._parts = [self._join(rows if rows is not None else torch.arange(count)).to(device)]
            self._starts, self._rows = _starts(self._parts), None
            if self._parts[0].numel() * 4 <= CONVERTED_BYTES:
                self._converted = to_network_range(self._parts[0])

    def __len__(self) -> int:
        return len(self._rows) if self._rows is not None else int(self._starts[-1])

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self), self._parts[0].shape[1], self.size, self.size))

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def __getitem__(self, index: torch.Tensor | slice) -> torch.Tensor:
        if self._converted is not None:
            return centre_crop(self.stored(index), self.size)
        return self.convert(centre_crop(self.gather(index), self.size))  # crop first: fewer bytes to convert

    def stored(self, index: torch.Tensor | slice) -> torch.Tensor:
        """The images at the stored size (before any crop), as floats in [-1, 1] on the device."""
        if self._converted is not None:
            return self._converted[index if isinstance(index, slice) else index.to(self.device)]
        return self.convert(self.gather(index))

    def convert(self, rows: torch.Tensor) -> torch.Tensor:
        """Gathered uint8 rows as floats in [-1, 1] on the device (at whatever size they are)."""
        return to_network_range(rows.to(self.device, non_blocking=True))

    def gather(self, index: torch.Tensor | slice) -> torch.Tensor:
        """The uint8 images at ``index``, where the storage is (pinned when it is host memory bound for a GPU)."""
        if isinstance(index, slice):
            index = torch.arange(len(self))[index]
        if not self.streamed:
            part = self._parts[0]
            return part[index.to(part.device)]
        index = index.cpu()
        rows = self._join(self._rows[index] if self._rows is not None else index)
        for part in self._parts:  # the rows are copied out: stop mapping the pages read (host memory stays flat)
            release_pages(part)
        return rows.pin_memory() if self.device.type == "cuda" else rows

    def _join(self, index: torch.Tensor) -> torch.Tensor:
        """Rows ``index`` of the parts joined end to end, where they are stored."""
        if len(self._parts) == 1:
            return self._parts[0][index]
        which = torch.searchsorted(self._starts, index, right=True) - 1
        out = torch.empty((len(index), *self._parts[0].shape[1:]), dtype=torch.uint8, device=self._parts[0].device)
        for k, part in enumerate(self._parts):
            chosen = torch.nonzero(which == k).flatten()
            if len(chosen):
                out[chosen] = part[index[chosen] - self._starts[k]]
        return out

    def head(self, count: int) -> Images:
        """The first ``count`` images, as a view (nothing is converted or copied)."""
        view = Images.__new__(Images)
        view.device, view.stored_size, view.size, view.streamed = self.device, self.stored_size, self.size, self.streamed
        view._converted = self._converted[:count] if self._converted is not None else None
        view._parts, view._starts = self._parts, self._starts
        base = self._rows if self._rows is not None else torch.arange(len(self))
        view._rows = base[:count]
        if not self.streamed:
            view._parts, view._rows = [self._parts[0][:count]], None
            view._starts = _starts(view._parts)
        return view


def _starts(parts: Sequence[torch.Tensor]) -> torch.Tensor:
    """Where each part begins in the joined index, and the total at the end."""
    return torch.tensor([0, *torch.tensor([len(p) for p in parts]).cumsum(0).tolist()])


def first(x: torch.Tensor | Images, count: int) -> torch.Tensor | Images:
    """The first ``count`` images of a tensor or of an :class:`Images`, without converting the rest."""
    return x.head(count) if isinstance(x, Images) else x[:count]
