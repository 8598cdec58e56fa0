"""The uint8 → [-1, 1] data path: :class:`Images`, streamed batches, and the cropping augmentations.

Every expected value is computed here from the uint8 storage (slicing, ``float() / 127.5 - 1``,
``randperm`` from a generator seeded as documented), never by the code under test.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

import cdkd_bench.images as images_module
from cdkd_bench import Augmentation
from cdkd_bench.augment import augmenter, random_resized_crop
from cdkd_bench.data import BatchStream, Split
from cdkd_bench.images import Images, first

CPU = torch.device("cpu")
STORED = 12
"""Stored side of the test images; ``CROP`` is the input size of a suite that crops."""
CROP = 8


def uint8_images(count: int, side: int = STORED, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, 3, side, side), dtype=torch.uint8, generator=g)


def expected(x: torch.Tensor, size: int) -> torch.Tensor:
    """Rows of uint8 ``x`` as the networks see them: centre-cropped by slicing, then mapped to [-1, 1]."""
    top = (x.shape[-2] - size) // 2
    left = (x.shape[-1] - size) // 2
    return (x[..., top : top + size, left : left + size].float() / 127.5) - 1


@pytest.fixture(params=["resident", "streamed"])
def storage(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test once with the split held whole and once streamed from host storage."""
    if request.param == "streamed":
        monkeypatch.setattr(images_module, "RESIDENT_BYTES", 0)
    return str(request.param)


# --- Images ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [None, STORED, CROP])
def test_indexing_gives_the_rows_in_network_range_centre_cropped(storage: str, size: int | None) -> None:
    x = uint8_images(10)
    images = Images([x], CPU, size)
    assert images.streamed == (storage == "streamed")
    side = size or STORED
    index = torch.tensor([7, 0, 3, 3, 9])
    out = images[index]
    assert out.dtype == torch.float32 and out.shape == (5, 3, side, side)
    assert torch.equal(out, expected(x[index], side))
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(images[2:6], expected(x[2:6], side))
    assert torch.equal(images[::3], expected(x[::3], side))
    assert torch.equal(images[:], expected(x, side))


@pytest.mark.parametrize("size", [STORED, CROP])
def test_len_shape_device_and_dtype_are_those_of_a_tensor_of_all_images(storage: str, size: int) -> None:
    x = uint8_images(10)
    images = Images([x], CPU, size)
    whole = expected(x, size)
    assert len(images) == len(whole) == 10
    assert images.shape == whole.shape
    assert images.device == whole.device
    assert images.dtype == whole.dtype


def test_stored_gives_the_uncropped_rows(storage: str) -> None:
    x = uint8_images(6)
    images = Images([x], CPU, CROP)
    index = torch.tensor([5, 1])
    assert torch.equal(images.stored(index), expected(x[index], STORED))


def test_rows_pick_and_order_the_images(storage: str) -> None:
    x = uint8_images(10)
    rows = torch.tensor([8, 2, 5, 0])
    images = Images([x], CPU, CROP, rows=rows)
    assert len(images) == 4
    assert images.shape == (4, 3, CROP, CROP)
    assert torch.equal(images[torch.tensor([0, 1, 2, 3])], expected(x[rows], CROP))
    assert torch.equal(images[torch.tensor([3, 1])], expected(x[torch.tensor([0, 2])], CROP))
    assert torch.equal(images[1:3], expected(x[torch.tensor([2, 5])], CROP))


def test_parts_are_read_back_to_back(storage: str) -> None:
    a, b, c = uint8_images(4, seed=1), uint8_images(6, seed=2), uint8_images(3, seed=3)
    joined = torch.cat([a, b, c])
    images = Images([a, b, c], CPU, CROP)
    assert len(images) == 13 and images.shape == (13, 3, CROP, CROP)
    across = torch.tensor([12, 3, 4, 9, 10, 0, 5])  # indices in all three parts, around both boundaries
    assert torch.equal(images[across], expected(joined[across], CROP))
    assert torch.equal(images[2:11], expected(joined[2:11], CROP))
    assert torch.equal(images[:], expected(joined, CROP))


def test_rows_over_several_parts(storage: str) -> None:
    a, b = uint8_images(4, seed=1), uint8_images(6, seed=2)
    joined = torch.cat([a, b])
    rows = torch.tensor([9, 3, 4, 0, 6])
    images = Images([a, b], CPU, None, rows=rows)
    assert len(images) == 5
    assert torch.equal(images[torch.arange(5)], expected(joined[rows], STORED))
    assert torch.equal(images[torch.tensor([1, 2])], expected(joined[torch.tensor([3, 4])], STORED))


def test_images_refuse_storage_that_is_not_uint8_nchw() -> None:
    with pytest.raises(ValueError):
        Images([torch.zeros(2, 3, 4, 4)], CPU)
    with pytest.raises(ValueError):
        Images([torch.zeros(3, 4, 4, dtype=torch.uint8)], CPU)
    with pytest.raises(ValueError):
        Images([], CPU)


def converted_rows(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many rows each call of ``Images.convert`` turns into floats (the real method still runs)."""
    calls: list[int] = []
    real: Callable[[Images, torch.Tensor], torch.Tensor] = Images.convert

    def counting(self: Images, rows: torch.Tensor) -> torch.Tensor:
        calls.append(len(rows))
        return real(self, rows)

    monkeypatch.setattr(Images, "convert", counting)
    return calls


@pytest.mark.parametrize("rows", [None, torch.tensor([6, 1, 8, 3, 0, 2])])
def test_head_and_first_give_the_first_images_without_converting_the_rest(
        storage: str, rows: torch.Tensor | None, monkeypatch: pytest.MonkeyPatch) -> None:
    x = uint8_images(10)
    images = Images([x], CPU, CROP, rows=rows)
    picked = x if rows is None else x[rows]
    calls = converted_rows(monkeypatch)
    head = images.head(3)
    also = first(images, 3)
    assert calls == []  # taking the head converts nothing
    for view in (head, also):
        assert isinstance(view, Images)
        assert len(view) == 3 and view.shape == (3, 3, CROP, CROP)
        assert view.streamed == images.streamed
        assert torch.equal(view[:], expected(picked[:3], CROP))
        assert torch.equal(view[torch.tensor([2, 0])], expected(picked[torch.tensor([2, 0])], CROP))
    if images.streamed:
        assert calls and max(calls) <= 3  # only rows of the head were ever converted
    else:
        assert calls == []  # small resident images were converted once, when the split was made


def test_first_of_a_tensor_is_its_first_rows() -> None:
    x = torch.randn(5, 3, 4, 4)
    assert torch.equal(first(x, 2), x[:2])


# --- BatchStream over Images ----------------------------------------------------------------


BATCH, SEED, STEPS = 4, 11, 7
"""Ten images in batches of four: two batches an epoch, so seven steps span four epochs."""


def expected_indices(count: int) -> list[torch.Tensor]:
    """The batches' indices as documented: each epoch a fresh randperm from a generator seeded with SEED,
    cut into whole batches (a last partial batch is not used)."""
    g = torch.Generator().manual_seed(SEED)
    out: list[torch.Tensor] = []
    while len(out) < STEPS:
        order = torch.randperm(count, generator=g)
        out += [order[i : i + BATCH] for i in range(0, count - BATCH + 1, BATCH)]
    return out[:STEPS]


def stream(split: Split) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    batches = BatchStream(split, BATCH, SEED)
    out = []
    for _ in range(STEPS):
        x, y, idx = batches.next()
        out.append((x, y, idx, batches.last_stored))
    return out


@pytest.mark.parametrize("size", [STORED, CROP])
@pytest.mark.parametrize("layout", ["one part", "two parts with rows"])
def test_streamed_batches_equal_resident_ones(size: int, layout: str, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = uint8_images(7, seed=4), uint8_images(6, seed=5)
    if layout == "one part":
        picked = torch.cat([a, b])[:10]
        parts, rows = [picked], None
    else:
        parts, rows = [a, b], torch.tensor([12, 0, 5, 7, 3, 9, 1, 11, 6, 8])
        picked = torch.cat([a, b])[rows]
    labels = torch.arange(10) * 3 + 1

    resident_images = Images(parts, CPU, size, rows=rows)
    monkeypatch.setattr(images_module, "RESIDENT_BYTES", 0)
    streamed_images = Images(parts, CPU, size, rows=rows)
    assert not resident_images.streamed and streamed_images.streamed

    resident = stream(Split(resident_images, labels))
    streamed = stream(Split(streamed_images, labels))
    for step, (want_idx, got_r, got_s) in enumerate(zip(expected_indices(10), resident, streamed, strict=True)):
        for x, y, idx, last_stored in (got_r, got_s):
            assert torch.equal(idx, want_idx), step
            assert torch.equal(y, labels[want_idx]), step
            assert torch.equal(x, expected(picked[want_idx], size)), step
            if size == STORED:
                assert last_stored is None
            else:
                assert last_stored is not None and torch.equal(last_stored, picked[want_idx]), step
        for resident_part, streamed_part in zip(got_r, got_s, strict=True):
            assert (resident_part is None and streamed_part is None) or torch.equal(resident_part, streamed_part)


def test_batches_stream_from_a_memory_map(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    written = np.lib.format.open_memmap(tmp_path / "images.npy", mode="w+", dtype=np.uint8, shape=(10, 3, STORED, STORED))
    written[:] = rng.integers(0, 256, size=written.shape, dtype=np.uint8)
    written.flush()
    truth = np.array(written)
    del written

    monkeypatch.setattr(images_module, "RESIDENT_BYTES", 0)
    mapped = np.load(tmp_path / "images.npy", mmap_mode="c")
    assert isinstance(mapped, np.memmap)
    images = Images([torch.from_numpy(mapped)], CPU, CROP)
    assert images.streamed
    labels = torch.arange(10)
    for step, (want_idx, (x, y, idx, last_stored)) in enumerate(zip(expected_indices(10), stream(Split(images, labels)), strict=True)):
        rows = torch.from_numpy(truth[want_idx.numpy()])
        assert torch.equal(idx, want_idx), step
        assert torch.equal(y, want_idx), step
        assert torch.equal(x, expected(rows, CROP)), step
        assert last_stored is not None and torch.equal(last_stored, rows), step
    assert np.array_equal(np.load(tmp_path / "images.npy"), truth)  # the file is never written


# --- random resized crops and the augmenter -----------------------------------------------


def natural_images(n: int = 3, side: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(5)
    return torch.rand(n, 3, side, side, generator=g) * 2 - 1


WHOLE_IMAGE = Augmentation(crop_area=(1.0, 1.0), crop_ratio=(1.0, 1.0))

def test_a_whole_image_crop_at_the_same_size_is_the_input() -> None:
    x = natural_images()
    out = random_resized_crop(x, 16, WHOLE_IMAGE, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


def test_a_whole_image_crop_always_mirrored_is_the_input_mirrored() -> None:
    x = natural_images()
    policy = Augmentation(crop_area=(1.0, 1.0), crop_ratio=(1.0, 1.0), hflip_probability=1.0)
    out = random_resized_crop(x, 16, policy, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, x.flip(-1), atol=1e-5, rtol=0)


def test_mirroring_reverses_the_same_crops_columns() -> None:
    """With the same generator state the boxes are the same; a flip probability of 1 only reverses them."""
    x = natural_images()
    policy = Augmentation(crop_area=(0.3, 0.9), crop_ratio=(0.75, 1.33))
    mirrored = Augmentation(crop_area=(0.3, 0.9), crop_ratio=(0.75, 1.33), hflip_probability=1.0)
    plain = random_resized_crop(x, 8, policy, torch.Generator().manual_seed(4))
    flipped = random_resized_crop(x, 8, mirrored, torch.Generator().manual_seed(4))
    assert torch.equal(flipped, plain.flip(-1))


def test_a_quarter_area_square_crop_spans_half_the_width() -> None:
    side, size = 32, 16
    columns = torch.arange(side, dtype=torch.float32).expand(4, 3, side, side).contiguous()  # value = column index
    policy = Augmentation(crop_area=(0.25, 0.25), crop_ratio=(1.0, 1.0))
    out = random_resized_crop(columns, size, policy, torch.Generator().manual_seed(2))
    assert out.shape == (4, 3, size, size)
    rows = out.reshape(-1, size)
    assert (rows.diff(dim=1) > 0).all()  # every row increases left to right: not mirrored, not shuffled
    assert len({round(float(v), 3) for v in out[:, 0, 0, 0]}) > 1  # the boxes lie at different places
    for image in out:
        assert torch.allclose(image, image[0, 0].expand_as(image), atol=1e-5)  # value depends on the column only
    span = rows[:, -1] - rows[:, 0]
    assert ((span >= side / 2 - 2) & (span <= side / 2)).all(), span  # the box is half the width wide
    assert rows.min() >= 0 and rows.max() <= side - 1


def test_random_resized_crop_shape_and_reproducibility() -> None:
    x = natural_images(5, 20)
    policy = Augmentation(crop_area=(0.08, 1.0), hflip_probability=0.5)
    out = random_resized_crop(x, 12, policy, torch.Generator().manual_seed(1))
    again = random_resized_crop(x, 12, policy, torch.Generator().manual_seed(1))
    other = random_resized_crop(x, 12, policy, torch.Generator().manual_seed(2))
    assert out.shape == (5, 3, 12, 12)
    assert torch.equal(out, again)
    assert not torch.equal(out, other)


def test_augmenter_without_a_crop_centre_crops_to_the_size() -> None:
    x = expected(uint8_images(4), STORED)
    out = augmenter(Augmentation(), seed=0, size=CROP)(x)
    assert torch.equal(out, x[..., 2:10, 2:10])
    inverted = augmenter(Augmentation(invert_probability=1.0), seed=0, size=CROP)(x)
    assert inverted.shape == (4, 3, CROP, CROP)
    torch.testing.assert_close(inverted, -x[..., 2:10, 2:10], atol=1e-5, rtol=0)


def test_augmenter_with_a_crop_gives_the_size() -> None:
    x = expected(uint8_images(4), STORED)
    policy = Augmentation(crop_area=(0.08, 1.0), hflip_probability=0.5)
    out = augmenter(policy, seed=0, size=CROP)(x)
    assert out.shape == (4, 3, CROP, CROP)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert out.min() >= -1 and out.max() <= 1
    assert torch.equal(out, augmenter(policy, seed=0, size=CROP)(x))


def test_the_identity_augmenter_returns_the_input() -> None:
    x = expected(uint8_images(4), STORED)
    assert torch.equal(augmenter(Augmentation(), seed=3)(x), x)
    assert torch.equal(augmenter(Augmentation(), seed=3, size=STORED)(x), x)


# --- memory while streaming a memory-mapped cache -------------------------------------------------


def _mapped_resident_kib(path: Path) -> int:
    """Resident KiB of this process's mappings of ``path`` (from /proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if fields and "-" in fields[0] and len(fields) >= 5:  # a mapping's header line
            inside = fields[-1] == str(path)
        elif inside and line.startswith("Rss:"):
            total += int(fields[1])
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux's /proc/self/smaps")
def test_streaming_a_cache_file_leaves_none_of_it_mapped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cdkd_bench.mapped import read_randomly, release_pages

    path = tmp_path / "images.npy"
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(200, 3, 64, 64))
    array[:] = np.arange(200, dtype=np.uint8)[:, None, None, None]
    array.flush()
    del array
    mapped = np.load(path, mmap_mode="c")
    read_randomly(mapped)
    storage = torch.from_numpy(mapped)
    assert release_pages(storage) and release_pages(storage[150:]) and not release_pages(torch.zeros(3, dtype=torch.uint8))
    monkeypatch.setattr(images_module, "RESIDENT_BYTES", 0)
    images = Images([storage], CPU)
    assert images.streamed
    for start in range(0, 200, 20):  # every row read once
        batch = images.gather(torch.arange(start, start + 20))
        assert torch.equal(batch[:, 0, 0, 0], torch.arange(start, start + 20, dtype=torch.uint8))
        assert _mapped_resident_kib(path) == 0  # copied out, then unmapped: host memory does not grow with the file
    touched = storage[::7].sum()  # without a release the pages read stay mapped, so the check above can fail
    assert touched > 0 and _mapped_resident_kib(path) > 0
