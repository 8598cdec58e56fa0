"""Recipes and their hyper-parameters: parsing, type checks and validation of user overrides."""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from cdkd_bench.api import Method
from cdkd_bench.errors import UserError, close_matches
from cdkd_bench.registry import Registry

_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}


def canonical_recipe(recipe: str, methods: Registry[type[Method]]) -> str:
    """``b+a`` → ``a+b``: loss terms are summed, so order carries no meaning."""
    parts = [p.strip() for p in recipe.split("+")]
    if not recipe.strip() or any(not p for p in parts):
        raise UserError(f"recipe {recipe!r} is malformed; join method names with '+', e.g. 'kd' or 'kd+dann'")
    for part in parts:
        methods.get(part)  # raises the unknown-method error with suggestions
    if len(set(parts)) != len(parts):
        raise UserError(f"recipe {recipe!r} names a method twice")
    return "+".join(sorted(parts))


class CommandLineText(str):
    """A value typed on the command line: parsed into the hparam's type (a grid file's values are already typed)."""


def parse_assignments(items: Iterable[str]) -> dict[str, str]:
    """``["kd.temperature=2"]`` → ``{"kd.temperature": "2"}`` (from ``--set``)."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise UserError(f"--set {item!r} is malformed; write it as method.hparam=value, e.g. kd.temperature=2")
        out[key.strip()] = CommandLineText(value.strip())
    return out


# Hparam values are stored as JSON and hashed: integers must fit 64 bits, floats must be finite.
_INT_LIMIT = 2**63


def _coerce(qualified: str, kind: Any, value: Any) -> Any:
    """Check a value against its declared type and range; strings (from the command line) are parsed."""
    value = _parse(qualified, kind, value)
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"hparam {qualified} must be a finite number, got {value!r}")
    if isinstance(value, int) and not isinstance(value, bool) and not -_INT_LIMIT < value < _INT_LIMIT:
        raise UserError(f"hparam {qualified} is out of range ({len(str(abs(value)))} digits); integers must fit in 64 bits")
    return value


def _parse(qualified: str, kind: Any, value: Any) -> Any:
    if typing.get_origin(kind) is typing.Literal:
        return _parse_choice(qualified, typing.get_args(kind), value)
    type_name = getattr(kind, "__name__", str(kind))
    type_name = f"{'an' if type_name[:1] in 'aeiou' else 'a'} {type_name}"
    if isinstance(value, CommandLineText):
        value = str(value)
        if kind is str:
            return value
        text = value.strip().lower()
        try:
            if kind is bool:
                if text in _TRUE | _FALSE:
                    return text in _TRUE
                raise ValueError
            return kind(value)
        except (TypeError, ValueError, OverflowError):
            raise UserError(f"hparam {qualified} must be {type_name}, got {value!r}") from None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            raise UserError(f"hparam {qualified} is too large for a float, got {len(str(abs(value)))} digits") from None
    if kind in (int, float, str, bool) and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
        raise UserError(f"hparam {qualified} must be {type_name}, got {value!r}")
    return value


def _parse_choice(qualified: str, allowed: tuple[Any, ...], value: Any) -> Any:
    """A ``Literal[...]`` hparam: one of its values (command-line text matches a value's spelling)."""
    for choice in allowed:
        if isinstance(value, CommandLineText) and str(value) == str(choice):
            return choice
        if type(value) is type(choice) and value == choice:
            return value
    raise UserError(f"hparam {qualified} must be one of {', '.join(repr(c) for c in allowed)}, got {value!r}")


def build_hparams(method: type[Method], overrides: Mapping[str, Any]) -> Any:
    """The method's ``Hparams`` with ``overrides`` (field name → value) applied and validated."""
    fields = {f.name: f for f in dataclasses.fields(method.Hparams)}
    hints = typing.get_type_hints(method.Hparams)
    values = {}
    for name, value in overrides.items():
        if name not in fields:
            qualified = [f"{method.name}.{f}" for f in fields]
            matches = close_matches(f"{method.name}.{name}", qualified)
            hint = f"; did you mean {' or '.join(repr(m) for m in matches)}?" if matches else ""
            known = ", ".join(qualified) if qualified else "none"
            raise UserError(f"unknown hparam '{method.name}.{name}'{hint} (hparams of {method.name}: {known})")
        values[name] = _coerce(f"{method.name}.{name}", hints.get(name, Any), value)
    try:
        return method.Hparams(**values)
    except (ValueError, TypeError) as exc:
        raise UserError(f"invalid hparam for {method.name}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a plugin's validation bug is still one sentence, not a traceback
        raise UserError(f"method {method.name!r} could not check its hparams ({type(exc).__name__}: {exc}); "
                        "this is a bug in its plugin") from None


def split_overrides(
    overrides: Mapping[str, Any], recipes: Iterable[str], methods: Registry[type[Method]]
) -> dict[str, dict[str, Any]]:
    """``{"kd.temperature": 2}`` → ``{"kd": {"temperature": 2}}``, checked against the recipes in use."""
    in_use = {part for recipe in recipes for part in recipe.split("+")}
    per_method: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        method_name, _, field_name = key.partition(".")
        if not field_name:
            raise UserError(f"hparam {key!r} must be written method.hparam, e.g. kd.temperature")
        if method_name not in in_use:
            methods.get(method_name)  # unknown method → suggestions
            raise UserError(
                f"hparam {key!r} is for method {method_name!r}, which no recipe in this grid uses "
                f"(recipes use: {', '.join(sorted(in_use))})"
            )
        per_method.setdefault(method_name, {})[field_name] = value
    # Validate every override once, up front, so a typo fails before any training starts.
    for method_name, fields in per_method.items():
        build_hparams(methods.get(method_name), fields)
    return per_method


def search_choices(space: Sequence[Any]) -> tuple[Any, ...] | None:
    """The choices of a categorical search space, or None for a numeric range ``(low, high[, "log"])``.

    Strings and booleans are always choices; numbers are a range when written as two
    numbers or as two numbers and ``"log"``, and choices otherwise (e.g. stage indices
    ``(-3, -2, -1)``).
    """
    if any(isinstance(v, str | bool) for v in space[:2]):
        return tuple(space)
    if len(space) == 2 or (len(space) == 3 and space[2] == "log"):
        return None
    return tuple(space)
