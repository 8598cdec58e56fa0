from __future__ import annotations

import dataclasses

import pytest
import torch

from cdkd_bench.data import load_domain, validation_split
from cdkd_bench.errors import UserError
from cdkd_plugins.domains import embedded_images

GENERATORS = [embedded_images.handwritten, embedded_images.printed, embedded_images.textured]


@pytest.mark.parametrize("generate", GENERATORS, ids=lambda g: g.__name__)
def test_embedded_domain_is_deterministic_balanced_and_well_formed(generate) -> None:
    first, second = generate(), generate()
    for split in ("train", "test"):
        x, y = getattr(first, f"{split}_x"), getattr(first, f"{split}_y")
        assert x.dtype == torch.uint8 and x.shape[1:] in ((1, 32, 32), (3, 32, 32))
        assert torch.equal(x, getattr(second, f"{split}_x")) and torch.equal(y, getattr(second, f"{split}_y"))
        counts = torch.bincount(y, minlength=10)
        assert counts.min() > 0.7 * counts.max(), f"{split} split is unbalanced: {counts.tolist()}"
        assert x.float().std() > 20, "images should not be blank"
    assert len(first.test_y) > 0.15 * (len(first.train_y) + len(first.test_y))


def test_textured_test_digits_never_appear_in_handwritten_training() -> None:
    handwritten, textured = embedded_images.handwritten(), embedded_images.textured()
    # MNIST-M's construction: textured train/test come from handwritten train/test digits.
    assert len(textured.train_y) == embedded_images.TEXTURED_COPIES * len(handwritten.train_y)
    assert torch.equal(textured.test_y[: len(handwritten.test_y)], handwritten.test_y)


def test_only_real_digit_fonts_are_used() -> None:
    names = [p.name for p in embedded_images.digit_fonts()]
    assert len(names) >= 10
    assert not any(n.startswith(("cmex", "cmsy", "LastResort", "STIXSiz")) for n in names)


def test_domain_is_decoded_once_then_read_from_the_cache(host, tmp_path) -> None:
    domain = host.domains.get("embedded.handwritten")
    first = load_domain(domain, 32, tmp_path, None)
    assert first.train_x.shape[1] == 3  # grey is repeated to RGB

    def fail(_context):  # a second generation would mean the cache was ignored
        raise AssertionError("generated twice")

    again = load_domain(dataclasses.replace(domain, load=fail), 32, tmp_path, None)
    assert torch.equal(first.train_x, again.train_x)


def test_a_corrupt_cache_file_is_rebuilt(host, tmp_path) -> None:
    domain = host.domains.get("embedded.handwritten")
    load_domain(domain, 32, tmp_path, None)
    cached = next((tmp_path / "data").glob("embedded.handwritten-*.pt"))
    cached.write_bytes(b"not a torch file")
    rebuilt = load_domain(domain, 32, tmp_path, None)
    assert rebuilt.train_x.shape[-1] == 32


def test_a_domain_returning_bad_labels_gets_a_clear_error(host, tmp_path) -> None:
    good = embedded_images.handwritten()
    bad = dataclasses.replace(good, train_y=good.train_y + 10)
    domain = dataclasses.replace(host.domains.get("embedded.handwritten"), name="bad", load=lambda _c: bad)
    with pytest.raises(UserError, match=r"domain 'bad': train labels must lie in \[0, 10\)"):
        load_domain(domain, 32, tmp_path, None)


def test_validation_split_is_fixed_stratified_and_disjoint() -> None:
    labels = torch.arange(200) % 10
    train, val = validation_split(labels, "some.domain")
    train_again, val_again = validation_split(labels, "some.domain")
    assert torch.equal(train, train_again) and torch.equal(val, val_again)
    assert set(train.tolist()).isdisjoint(val.tolist()) and len(train) + len(val) == 200
    assert torch.bincount(labels[val], minlength=10).tolist() == [2] * 10
