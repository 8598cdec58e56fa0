from __future__ import annotations

import dataclasses

import torch

from cdkd_bench import Augmentation
from cdkd_bench.augment import augmentation_from_dict, augmenter


def batch() -> torch.Tensor:
    return torch.linspace(-1, 1, 4 * 3 * 8 * 8).reshape(4, 3, 8, 8)


def test_the_identity_policy_leaves_images_unchanged() -> None:
    x = batch()
    torch.testing.assert_close(augmenter(Augmentation(), seed=0)(x), x, atol=1e-5, rtol=0)


def test_augmentation_is_reproducible_for_a_seed_and_varies_between_seeds() -> None:
    policy = Augmentation(rotation_degrees=15, scale=(0.8, 1.2), translate=0.1, gain=(0.5, 1.5), bias=0.3, invert_probability=0.5)
    first, again, other = augmenter(policy, 1), augmenter(policy, 1), augmenter(policy, 2)
    x = batch()
    out = first(x)
    assert torch.equal(out, again(x))
    assert not torch.equal(out, other(x))
    assert out.shape == x.shape and out.min() >= -1 and out.max() <= 1


def test_invert_probability_one_flips_every_image() -> None:
    x = batch()
    torch.testing.assert_close(augmenter(Augmentation(invert_probability=1.0), 0)(x), -x, atol=1e-5, rtol=0)


def test_policy_survives_the_json_round_trip_of_a_spec() -> None:
    policy = Augmentation(scale=(0.9, 1.1), gain=(0.7, 1.3))
    as_json = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(policy).items()}
    assert augmentation_from_dict(as_json) == policy
    assert augmentation_from_dict(None) is None
