from __future__ import annotations

import dataclasses

import pytest
import torch

from cdkd_bench.data import load_domain, validation_split
from cdkd_bench.errors import UserError
from cdkd_plugins.domains import embedded_images


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
