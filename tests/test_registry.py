from __future__ import annotations

import pytest

from cdkd_bench.errors import UserError, close_matches
from cdkd_bench.registry import RegistrationError, Registry


def test_duplicate_name_is_an_error_naming_both_plugins() -> None:
    registry: Registry[int] = Registry("method")
    registry.add("kd", 1, plugin="first-plugin")
    with pytest.raises(RegistrationError, match="'kd' is registered twice: by plugin 'first-plugin' and by plugin 'second-plugin'"):
        registry.add("kd", 2, plugin="second-plugin")


def test_unknown_name_suggests_close_matches_and_lists_what_exists() -> None:
    registry: Registry[int] = Registry("method")
    for name in ("kd", "dann", "fitnet"):
        registry.add(name, 0, plugin="p")
    with pytest.raises(UserError) as info:
        registry.get("fitnett")
    message = str(info.value)
    assert message.startswith("unknown method 'fitnett'; did you mean 'fitnet'?")
    assert "(known: dann, fitnet, kd)" in message


def test_unknown_name_in_an_empty_registry_says_nothing_is_registered() -> None:
    with pytest.raises(UserError, match="no suites are registered"):
        Registry[int]("suite").get("office31")


def test_close_matches_accepts_a_name_without_its_namespace() -> None:
    assert close_matches("fonts", ["embedded.fonts", "embedded.textured"]) == ["embedded.fonts"]


def test_entries_record_plugin_and_version_and_list_sorted() -> None:
    registry: Registry[str] = Registry("suite")
    registry.add("b", "B", plugin="p2", plugin_version="2.0")
    registry.add("a", "A", plugin="p1", plugin_version="1.0")
    assert [e.name for e in registry] == ["a", "b"]
    assert registry.entry("b").plugin == "p2" and registry.entry("b").plugin_version == "2.0"
    assert registry.names("a*") == ["a"]
