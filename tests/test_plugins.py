"""Plugin loading through the entry-point group, exactly as a third-party package would be."""

from __future__ import annotations

import inspect

import pytest

from cdkd_bench import hookspecs
from cdkd_bench.plugins import load_host

THIRD_PARTY_METHOD = """
from dataclasses import dataclass, field
import torch
import cdkd_bench

class Entropy(cdkd_bench.Method):
    '''Entropy minimisation on target predictions.'''
    name = "entmin_{suffix}"
    version = 3
    family = "adaptation"
    uses_target = True

    @dataclass(frozen=True)
    class Hparams:
        weight: float = field(default=0.1, metadata={{"search": (0.01, 1.0, "log")}})

    def loss(self, step):
        p = step.student("target").logits.softmax(1)
        return {{"entropy": -self.hparams.weight * (p * p.clamp_min(1e-8).log()).sum(1).mean()}}

@cdkd_bench.hookimpl
def cdkd_register_methods(register):
    register(Entropy)
"""


def test_builtins_load_through_the_entry_point_group() -> None:
    host = load_host()
    names = {p.name for p in host.plugins if not p.error}
    assert {"embedded", "timm", "kd", "source_only", "target_oracle", "local", "last"} <= names
    assert host.methods.entry("kd").plugin == "kd"
    assert host.suites.entry("embedded").plugin == "embedded"


def test_third_party_plugin_registers_a_method_with_its_version(plugins) -> None:
    plugins.install("cdkd_entmin_a", THIRD_PARTY_METHOD.format(suffix="a"), version="1.2.3")
    host = load_host()
    entry = host.methods.entry("entmin_a")
    assert entry.plugin == "cdkd_entmin_a"
    assert entry.plugin_version == "1.2.3"
    assert entry.value.version == 3


def test_disable_env_var_skips_a_plugin(plugins, monkeypatch: pytest.MonkeyPatch) -> None:
    plugins.install("cdkd_entmin_b", THIRD_PARTY_METHOD.format(suffix="b"))
    monkeypatch.setenv("CDKD_BENCH_DISABLE_PLUGINS", "cdkd_entmin_b, kd")
    host = load_host()
    assert "entmin_b" not in host.methods
    assert "kd" not in host.methods
    assert "source_only" in host.methods


def test_a_plugin_that_fails_to_import_is_reported_and_the_rest_load(plugins) -> None:
    plugins.install("cdkd_broken", "import a_module_that_does_not_exist\n")
    host = load_host()
    failed = {p.name: p.error for p in host.failed_plugins}
    assert "cdkd_broken" in failed
    assert "ModuleNotFoundError" in failed["cdkd_broken"]
    assert "kd" in host.methods and "embedded" in host.suites


def test_a_misspelled_hook_is_reported_not_silent_and_the_rest_load(plugins) -> None:
    plugins.install(
        "cdkd_typo",
        """
        import cdkd_bench

        @cdkd_bench.hookimpl
        def cdkd_register_method(register):
            pass
        """,
    )
    host = load_host()
    failed = {p.name: p.error for p in host.failed_plugins}
    assert failed["cdkd_typo"].startswith(
        "it implements hook 'cdkd_register_method', which does not exist; did you mean 'cdkd_register_methods'"
    )
    assert "kd" in host.methods


def test_a_duplicate_name_keeps_the_first_plugin_and_skips_the_later_one(plugins) -> None:
    plugins.install("cdkd_fake_kd", THIRD_PARTY_METHOD.format(suffix="x").replace('"entmin_x"', '"kd"'))
    host = load_host()
    assert host.methods.entry("kd").plugin == "kd"  # built-ins load first, so they keep their names
    failed = {p.name: p.error for p in host.failed_plugins}
    assert failed["cdkd_fake_kd"] == "method 'kd' is already registered by plugin 'kd' (distribution cdkd-bench 0.1.0)"


@pytest.mark.parametrize("name", [n for n in dir(hookspecs) if n.startswith("cdkd_")])
def test_every_hook_is_documented_with_its_parameters(name: str) -> None:
    function = getattr(hookspecs, name)
    doc = inspect.getdoc(function) or ""
    assert "versionadded" in doc
    for parameter in inspect.signature(function).parameters:
        assert f":param {parameter}:" in doc, f"{name} does not document {parameter}"


@pytest.mark.parametrize("name", [n for n in dir(hookspecs) if n.startswith("cdkd_")])
def test_every_hook_has_an_implementation_among_the_builtins_or_a_test(name: str) -> None:
    host = load_host()
    implemented = bool(getattr(host.pm.hook, name).get_hookimpls())
    observers = {"cdkd_before_run", "cdkd_after_run"}  # exercised by tests/test_grid.py's observer plugin
    assert implemented or name in observers
