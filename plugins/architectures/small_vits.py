"""Vision transformers for 32x32 inputs, registered in timm's own registry so they stay timm models.

timm's ViTs expect 224-pixel images in 16-pixel patches; these take 32x32 digits in 4-pixel
patches (an 8x8 token grid), small enough to train on a CPU. They make heterogeneous pairs
possible on the embedded suite: a ResNet teacher (NCHW maps shrinking to 2x2) teaching a ViT
student (tokens, whose intermediate maps timm returns as 8x8 NCHW grids).
"""

from __future__ import annotations

from typing import Any

from timm.models import register_model
from timm.models.vision_transformer import VisionTransformer


@register_model
def vit_tiny_p4_32px(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """ViT with 4x4 patches for 32x32 inputs: width 96, 4 blocks, 3 heads (0.46M parameters)."""
    if pretrained:
        raise ValueError("no pretrained weights are published for the small-input ViTs")
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(key, None)  # timm.create_model's pretrained-config plumbing
    return VisionTransformer(img_size=32, patch_size=4, embed_dim=96, depth=4, num_heads=3, **kwargs)
