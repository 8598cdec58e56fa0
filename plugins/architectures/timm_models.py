"""Any timm model name is an architecture; this resolver runs last so other plugins can override names."""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING

from cdkd_bench import UserError, hookimpl

if TYPE_CHECKING:
    from torch import nn


def _timm() -> ModuleType:
    """timm, with the 32px variants registered; imported on first use, since commands that build no network must not pay for it."""
    import timm

    from . import small_resnets, small_vits  # noqa: F401 - register the 32px variants with timm

    return timm


@hookimpl(trylast=True)
def cdkd_resolve_architecture(name: str, num_classes: int, pretrained: bool) -> nn.Module | None:
    timm = _timm()
    if not timm.is_model(name):
        return None
    if not pretrained:
        try:
            return timm.create_model(name, pretrained=False, num_classes=num_classes)
        except Exception as exc:  # noqa: BLE001 - a timm model that cannot be built for this use is the user's choice
            raise UserError(f"timm could not build architecture {name!r} with {num_classes} classes ({type(exc).__name__}: {exc})") from None
    try:
        return timm.create_model(name, pretrained=True, num_classes=num_classes)
    except Exception as exc:  # noqa: BLE001 - timm/hub raise many kinds; all mean "no weights here"
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"pretrained weights for architecture {name!r} could not be loaded ({first_line}); "
            "download them once while online (they are cached by huggingface_hub) or run without pretrained weights"
        ) from None


@hookimpl
def cdkd_architecture_names() -> list[str]:
    return _timm().list_models()
