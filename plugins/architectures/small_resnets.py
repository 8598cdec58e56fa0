"""ResNets for 32x32 inputs, registered in timm's own registry so they stay timm models.

timm's ResNet stem (7x7 stride-2 conv + max-pool) shrinks a 32x32 digit to 8x8 before the
first block. These variants use a single 3x3 stride-2 conv and no pool, so the first stage
sees 16x16 maps, and narrow widths so they train in seconds per epoch on a laptop CPU.
"""

from __future__ import annotations

from typing import Any, cast

from timm.models import register_model
from timm.models.resnet import BasicBlock, ResNet
from torch import nn


def _small_input_resnet(layers: tuple[int, ...], channels: tuple[int, ...], **kwargs: Any) -> ResNet:
    if kwargs.pop("pretrained", False):
        raise ValueError("no pretrained weights are published for the small-input ResNets")
    # timm.create_model passes its pretrained-config plumbing to every factory.
    kwargs.pop("pretrained_cfg", None)
    kwargs.pop("pretrained_cfg_overlay", None)
    kwargs.pop("cache_dir", None)
    # A 'deep' stem sized channels[0] // 2 makes timm size the first stage for channels[0];
    # the stem itself is then swapped for one 3x3 stride-2 conv.
    # timm annotates `block` as an instance (Union[BasicBlock, Bottleneck]) though it takes the class: its hint is wrong.
    model = ResNet(BasicBlock, layers, channels=channels, stem_type="deep", stem_width=channels[0] // 2, **kwargs)  # type: ignore[arg-type]
    in_chans = kwargs.get("in_chans", 3)
    # add_module rather than `model.conv1 = ...`: timm leaves these attributes unannotated, so mypy types
    # them as the deep stem's nn.Sequential. Same effect: the submodule is replaced in place.
    model.add_module("conv1", nn.Conv2d(in_chans, channels[0], kernel_size=3, stride=2, padding=1, bias=False))
    model.add_module("maxpool", nn.Identity())
    for info in model.feature_info[1:]:
        # without the stem pool every stage sees twice the resolution
        info["reduction"] = cast(int, info["reduction"]) // 2
    return model


@register_model
def resnet18_w16_32px(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-18 layout, widths 16-128, for 32x32 inputs (0.70M parameters)."""
    return _small_input_resnet((2, 2, 2, 2), (16, 32, 64, 128), pretrained=pretrained, **kwargs)


@register_model
def resnet18_w32_32px(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-18 layout, widths 32-256, for 32x32 inputs (2.8M parameters)."""
    return _small_input_resnet((2, 2, 2, 2), (32, 64, 128, 256), pretrained=pretrained, **kwargs)


@register_model
def resnet10_w16_32px(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-10 layout (one block per stage), widths 16-128, for 32x32 inputs (0.31M parameters)."""
    return _small_input_resnet((1, 1, 1, 1), (16, 32, 64, 128), pretrained=pretrained, **kwargs)


@register_model
def resnet10_w8_32px(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-10 layout (one block per stage), widths 8-64, for 32x32 inputs (0.08M parameters)."""
    return _small_input_resnet((1, 1, 1, 1), (8, 16, 32, 64), pretrained=pretrained, **kwargs)
