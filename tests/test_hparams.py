from __future__ import annotations

import pytest

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
