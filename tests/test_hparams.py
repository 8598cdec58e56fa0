from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from cdkd_bench import Method
from cdkd_bench.errors import UserError
from cdkd_bench.hparams import build_hparams, canonical_recipe, parse_assignments, split_overrides
from cdkd_plugins.methods.kd import KD


def test_unknown_hparam_suggests_the_right_spelling() -> None:
    with pytest.raises(UserError, match=r"unknown hparam 'kd.tempreature'; did you mean 'kd.temperature'\?"):
        build_hparams(KD, {"tempreature": 2.0})


def test_invalid_value_is_one_sentence_from_the_method() -> None:
    with pytest.raises(UserError, match="invalid hparam for kd: temperature must be positive, got -1.0"):
        build_hparams(KD, {"temperature": -1})


def test_command_line_strings_are_parsed_by_declared_type() -> None:
    typed = parse_assignments(["kd.temperature=2.5", "kd.variant=mse"])
    hp = build_hparams(KD, {"temperature": typed["kd.temperature"], "variant": typed["kd.variant"]})
    assert hp.temperature == 2.5 and hp.variant == "mse"


def test_a_grid_file_string_is_not_parsed_into_a_number() -> None:
    with pytest.raises(UserError, match="hparam kd.temperature must be a float, got '2.5'"):
        build_hparams(KD, {"temperature": "2.5"})


@pytest.mark.parametrize("value", ["warm", True, [1.0]])
def test_wrong_type_is_rejected(value: object) -> None:
    with pytest.raises(UserError, match="hparam kd.temperature must be a float"):
        build_hparams(KD, {"temperature": value})


def test_parse_assignments_requires_method_dot_name() -> None:
    assert parse_assignments(["kd.temperature=2"]) == {"kd.temperature": "2"}
    with pytest.raises(UserError, match="method.hparam=value"):
        parse_assignments(["temperature=2"])


def test_override_for_a_method_outside_the_grid_is_an_error(host) -> None:
    with pytest.raises(UserError, match="no recipe in this grid uses"):
        split_overrides({"kd.temperature": 2.0}, ["source_only"], host.methods)


def test_override_for_an_unknown_method_suggests(host) -> None:
    with pytest.raises(UserError, match="unknown method 'kdd'; did you mean 'kd'"):
        split_overrides({"kdd.temperature": 2.0}, ["kd"], host.methods)


def test_canonical_recipe_sorts_and_validates(host) -> None:
    assert canonical_recipe("source_only+kd", host.methods) == "kd+source_only"
    with pytest.raises(UserError, match="names a method twice"):
        canonical_recipe("kd+kd", host.methods)
    with pytest.raises(UserError, match="malformed"):
        canonical_recipe("kd+", host.methods)


class WithChoices(Method):
    """A component whose hparam is a Literal."""

    name = "with_choices"

    @dataclass(frozen=True)
    class Hparams:
        mode: Literal["fast", "slow"] = field(default="fast", metadata={"search": ("fast", "slow")})
        stage: Literal[-2, -1] = field(default=-1, metadata={"search": (-2, -1)})


def test_literal_hparams_accept_their_values_from_the_command_line_and_the_grid_file() -> None:
    typed = parse_assignments(["with_choices.mode=slow", "with_choices.stage=-2"])
    hp = build_hparams(WithChoices, {"mode": typed["with_choices.mode"], "stage": typed["with_choices.stage"]})
    assert (hp.mode, hp.stage) == ("slow", -2)
    assert build_hparams(WithChoices, {"mode": "slow", "stage": -2}).stage == -2


@pytest.mark.parametrize("field_name, value", [("mode", "medium"), ("stage", -3), ("stage", "-2")])
def test_a_value_outside_a_literal_is_refused_with_the_choices(field_name: str, value: object) -> None:
    with pytest.raises(UserError, match=f"hparam with_choices.{field_name} must be one of"):
        build_hparams(WithChoices, {field_name: value})


def test_type_errors_use_the_right_article() -> None:
    with pytest.raises(UserError, match="must be an int, got 'x'"):
        build_hparams(Counted, {"count": parse_assignments(["counted.count=x"])["counted.count"]})


class Counted(Method):
    """A component with an integer hparam."""

    name = "counted"

    @dataclass(frozen=True)
    class Hparams:
        count: int = field(default=1, metadata={"search": (1, 4)})
