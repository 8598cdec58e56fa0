from __future__ import annotations

import pytest
import timm
import torch

import cdkd_plugins.architectures.small_resnets  # noqa: F401 - registers the variants with timm
from cdkd_bench.errors import UserError
from cdkd_bench.networks import forward_outputs

SMALL_INPUT = timm.list_models("*_32px")


def test_small_input_variants_are_in_timms_registry() -> None:
    assert {"resnet18_w16_32px", "resnet10_w8_32px"} <= set(SMALL_INPUT)


@pytest.mark.parametrize("name", SMALL_INPUT)
def test_small_input_variant_keeps_the_timm_interface(host, name: str) -> None:
    model = host.architecture(name, num_classes=7).eval()
    x = torch.randn(2, 3, 32, 32)
    outputs = forward_outputs(model, x)
    assert outputs.logits.shape == (2, 7)
    torch.testing.assert_close(outputs.logits, model(x))
    assert outputs.features.shape == (2, model.num_features)
    maps = model.forward_intermediates(x, intermediates_only=True)
    assert [m.shape[-1] for m in maps] == [32 // info["reduction"] for info in model.feature_info]


def test_teacher_default_is_clearly_bigger_than_student_default(host) -> None:
    suite = host.suites.get("embedded")
    count = lambda name: sum(p.numel() for p in host.architecture(name, 10).parameters())  # noqa: E731
    assert count(suite.default_teacher) > 5 * count(suite.default_student)


def test_any_timm_name_resolves(host) -> None:
    model = host.architecture("resnet10t", num_classes=3)
    assert model.get_classifier().out_features == 3


def test_unknown_architecture_suggests(host) -> None:
    with pytest.raises(UserError, match=r"unknown architecture 'resnet18_w16_32'; did you mean 'resnet18_w16_32px'"):
        host.architecture("resnet18_w16_32", num_classes=10)


def test_pretrained_weights_that_cannot_be_had_are_a_user_error(host) -> None:
    with pytest.raises(UserError, match="pretrained weights for architecture 'resnet10_w8_32px' could not be loaded"):
        host.architecture("resnet10_w8_32px", num_classes=10, pretrained=True)
