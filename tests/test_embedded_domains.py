"""The embedded suite's generators: well-formed, deterministic, balanced and fair (disjoint train/test sources)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cdkd_bench.errors import UserError
from cdkd_plugins.domains import (
    embedded_fonts,
    embedded_images,
    embedded_printed,
    embedded_street,
    embedded_textured,
    embedded_textures,
)
from cdkd_plugins.domains.embedded_common import handwritten_arrays

NAMES = ("handwritten", "printed", "textured", "street")
CHANNELS = {"handwritten": 1, "printed": 1, "textured": 3, "street": 3}
# The smallest sizes the suite promises, (train, test).
MIN_SIZES = {"handwritten": (1400, 350), "printed": (4000, 2000), "textured": (4000, 1000), "street": (5000, 2000)}


@pytest.fixture(scope="module")
def printed_meta():
    return embedded_printed.printed_with_metadata()


@pytest.fixture(scope="module")
def textured_meta():
    return embedded_textured.textured_with_metadata()


@pytest.fixture(scope="module")
def street_meta():
    return embedded_street.street_with_metadata()


@pytest.fixture(scope="module")
def handwritten_meta():
    return (embedded_images.handwritten(),)


def _generated(request: pytest.FixtureRequest, name: str):
    return request.getfixturevalue(f"{name}_meta")[0]


# The largest domain (street) is checked in the slow env: the default run must stay under 10 minutes.
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "street" else n for n in NAMES])
def test_generator_is_deterministic_and_well_formed(request, name: str) -> None:
    first = _generated(request, name)
    second = getattr(embedded_images, name)()  # the suite's loader calls these by name
    for field in ("train_x", "train_y", "test_x", "test_y", "train_groups"):
        assert torch.equal(getattr(first, field), getattr(second, field)), f"{name}.{field} differs between calls"
    for split, minimum in zip(("train", "test"), MIN_SIZES[name], strict=True):
        x, y = getattr(first, f"{split}_x"), getattr(first, f"{split}_y")
        assert x.dtype == torch.uint8 and tuple(x.shape[1:]) == (CHANNELS[name], 32, 32)
        assert y.dtype == torch.int64 and len(y) == len(x) >= minimum
        assert 0 <= int(y.min()) and int(y.max()) <= 9
        assert x.float().std() > 20, "images should not be blank"
    assert first.train_groups.dtype == torch.int64 and first.train_groups.shape == first.train_y.shape


@pytest.mark.parametrize("name", NAMES)
def test_classes_are_balanced_and_each_group_has_one_label(request, name: str) -> None:
    data = _generated(request, name)
    for split in ("train", "test"):
        counts = torch.bincount(getattr(data, f"{split}_y"), minlength=10)
        assert counts.min() > 0.7 * counts.max(), f"{name} {split} split is unbalanced: {counts.tolist()}"
    groups, labels = data.train_groups, data.train_y
    for group in groups.unique():
        assert labels[groups == group].unique().numel() == 1, f"{name} group {int(group)} mixes labels"


def test_font_families_are_disjoint_mixed_and_each_image_uses_its_splits_fonts(printed_meta, street_meta) -> None:
    train_files = set(embedded_fonts.family_files(embedded_fonts.TRAIN_FAMILIES))
    test_files = set(embedded_fonts.family_files(embedded_fonts.TEST_FAMILIES))
    assert not set(embedded_fonts.TRAIN_FAMILIES) & set(embedded_fonts.TEST_FAMILIES)
    assert not train_files & test_files
    for families in (embedded_fonts.TRAIN_FAMILIES, embedded_fonts.TEST_FAMILIES):
        # Each side mixes kinds of typeface, so the split is by typeface, not by kind.
        assert any("Sans" in f for f in families) and any("Serif" in f or "Roman" in f or "STIX" in f for f in families)
        assert any("Mono" in f or "Typewriter" in f for f in families)
    for name, (_, train, test) in (("printed", printed_meta), ("street", street_meta)):
        assert set(train.fonts) <= train_files and set(test.fonts) <= test_files, name
        # Every family of a side is actually drawn on, so the constants describe the data.
        assert set(test.fonts) == test_files and set(train.fonts) == train_files, name


def test_printed_groups_are_font_digit_pairs(printed_meta) -> None:
    data, train, _ = printed_meta
    pairs = {(font, int(label)) for font, label in zip(train.fonts, data.train_y.tolist(), strict=True)}
    assert len(pairs) == data.train_groups.unique().numel()
    for group in data.train_groups.unique()[:20]:
        assert len(set(train.fonts[(data.train_groups == group).numpy()])) == 1


def test_printed_glyphs_are_many_and_distinct(printed_meta) -> None:
    data, train, _ = printed_meta
    # The shapes themselves (8x8 scans before ink, paper and noise), not just their grey levels.
    distinct_scans = np.unique(train.scans.reshape(len(train.scans), -1), axis=0)
    assert len(distinct_scans) >= 0.95 * len(train.scans)
    distinct_images = torch.unique(data.train_x.flatten(1), dim=0)
    assert len(distinct_images) >= 0.95 * len(data.train_x)


def test_textured_sources_are_disjoint_and_test_digits_are_handwritten_test_digits(textured_meta) -> None:
    data, train, test = textured_meta
    assert not set(embedded_textures.TRAIN_TEXTURES) & set(embedded_textures.TEST_TEXTURES)
    assert set(train.sources) == set(embedded_textures.TRAIN_TEXTURES)
    assert set(test.sources) == set(embedded_textures.TEST_TEXTURES)
    _, labels, hw_train, hw_test = handwritten_arrays()
    assert set(test.digits.tolist()) == set(hw_test.tolist()) and not set(test.digits.tolist()) & set(hw_train.tolist())
    assert set(train.digits.tolist()) == set(hw_train.tolist())
    assert torch.equal(data.test_y, torch.from_numpy(labels[test.digits]))
    handwritten = embedded_images.handwritten()
    assert len(data.train_y) == embedded_textured.TEXTURED_COPIES * len(handwritten.train_y)
    assert torch.equal(data.test_y[: len(handwritten.test_y)], handwritten.test_y)


def test_textured_copies_of_one_scan_share_a_group(textured_meta) -> None:
    data, train, _ = textured_meta
    assert torch.equal(data.train_groups, torch.from_numpy(train.digits))
    sizes = torch.bincount(data.train_groups)
    assert set(sizes[sizes > 0].tolist()) == {embedded_textured.TEXTURED_COPIES}


def test_street_is_in_colour(street_meta) -> None:
    data = street_meta[0]
    for x in (data.train_x, data.test_x):
        spread = (x.float().max(dim=1).values - x.float().min(dim=1).values).mean(dim=(1, 2))
        assert (spread > 15).float().mean() > 0.5, "most street images should be clearly coloured"


# ------------------------------------------------------------------ missing or damaged input files


def _copy(folder: Path, tmp_path: Path) -> Path:
    copy = tmp_path / folder.name
    shutil.copytree(folder, copy)
    return copy


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _assert_names(error: pytest.ExceptionInfo[UserError], file: str, tmp_path: Path) -> None:
    message = str(error.value)
    assert file in message and "reinstall" in message
    assert str(tmp_path) not in message and message.count(". ") == 0, "one sentence, no machine path"


@pytest.mark.parametrize("generate", [embedded_images.printed, embedded_images.street], ids=lambda g: g.__name__)
def test_a_missing_font_folder_names_the_font(monkeypatch, tmp_path, generate) -> None:
    monkeypatch.setattr(embedded_fonts, "font_folder", lambda: tmp_path / "no-fonts-here")
    with pytest.raises(UserError) as error:
        generate()
    _assert_names(error, embedded_fonts.family_files(embedded_fonts.TRAIN_FAMILIES)[0], tmp_path)


def test_a_corrupt_font_names_the_font(monkeypatch, tmp_path) -> None:
    fonts = _copy(embedded_fonts.font_folder(), tmp_path)
    _truncate(fonts / "cmtt10.ttf")
    monkeypatch.setattr(embedded_fonts, "font_folder", lambda: fonts)
    with pytest.raises(UserError) as error:
        embedded_images.printed()
    _assert_names(error, "cmtt10.ttf", tmp_path)


@pytest.mark.parametrize("file", ["grace_hopper.jpg", "jacksboro_fault_dem.npz", "s1045.ima.gz"])
def test_a_corrupt_matplotlib_sample_names_the_file(monkeypatch, tmp_path, file: str) -> None:
    samples = _copy(embedded_textures.matplotlib_sample_folder(), tmp_path)
    _truncate(samples / file)
    monkeypatch.setattr(embedded_textures, "matplotlib_sample_folder", lambda: samples)
    with pytest.raises(UserError) as error:
        embedded_images.textured()
    _assert_names(error, file, tmp_path)


def test_a_missing_sklearn_photo_names_the_file(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(embedded_textures, "sklearn_image_folder", lambda: tmp_path)
    with pytest.raises(UserError) as error:
        embedded_images.street()
    _assert_names(error, "china.jpg", tmp_path)
