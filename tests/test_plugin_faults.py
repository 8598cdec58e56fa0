"""A broken third-party plugin is reported by name and distribution; the rest of the tool keeps working."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdkd_bench.cli import main
from cdkd_bench.engine import EngineSettings
from cdkd_bench.grid import GridRequest, expand, run_grid
from cdkd_bench.plugins import load_host
from cdkd_bench.store import Store

METHOD = """
from dataclasses import dataclass
import cdkd_bench

class M(cdkd_bench.Method):
    '''A harmless method.'''
    name = "{name}"
    family = "adaptation"

    @dataclass(frozen=True)
    class Hparams:
        pass

    def loss(self, step):
        return {{}}
"""

FAULTS = {
    # plugin module name -> (its source, the reason it is skipped)
    "cdkd_raises_in_register": (
        METHOD.format(name="early_method") + """
@cdkd_bench.hookimpl
def cdkd_register_methods(register):
    register(M)

@cdkd_bench.hookimpl
def cdkd_register_selectors(register):
    raise KeyError("no such table")
""",
        "cdkd_register_selectors raised KeyError: 'no such table'",
    ),
    "cdkd_exits_at_import": ("import sys\nsys.exit('giving up')\n", "SystemExit while importing: giving up"),
    "cdkd_bad_signature": (
        "import cdkd_bench\n\n@cdkd_bench.hookimpl\ndef cdkd_register_methods(registrar):\n    pass\n",
        "it cannot be registered",
    ),
    "cdkd_unsafe_name": (
        """
import cdkd_bench
from cdkd_bench import DomainData, Domain

@cdkd_bench.hookimpl
def cdkd_register_domains(register):
    register(Domain("../../evil", 10, lambda context: None))
""",
        "registered a domain named '../../evil'; names are letters, digits",
    ),
    "cdkd_wrong_object": (
        "import cdkd_bench\n\n@cdkd_bench.hookimpl\ndef cdkd_register_methods(register):\n    register('kd')\n",
        "registered 'kd' as a method; expected a cdkd_bench.Method subclass",
    ),
}


def install_all(plugins) -> None:
    for module, (source, _) in FAULTS.items():
        plugins.install(module, source)


def test_each_broken_plugin_is_skipped_with_its_reason_and_the_rest_loads(plugins) -> None:
    install_all(plugins)
    host = load_host()
    reasons = {p.name: p.error for p in host.failed_plugins}
    for module, (_, reason) in FAULTS.items():
        assert reason in (reasons.get(module) or ""), (module, reasons.get(module))
    assert "early_method" not in host.methods  # registered before the same plugin failed: dropped too
    assert {"kd", "source_only", "target_oracle"} <= set(host.methods.names())
    assert "embedded" in host.suites and "last" in host.selectors


def test_the_commands_still_work_and_name_each_broken_plugin(plugins, capsys: pytest.CaptureFixture[str]) -> None:
    install_all(plugins)
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    for module in FAULTS:
        assert f"{module:<16} {module} 1.2.3" in out and "SKIPPED" in out.split(module, 2)[2].splitlines()[0]
    assert main(["list", "methods"]) == 0
    captured = capsys.readouterr()
    assert "kd" in captured.out and "early_method" not in captured.out
    assert "plugin 'cdkd_exits_at_import' (distribution cdkd_exits_at_import 1.2.3) failed to load" in captured.err


def test_two_third_party_plugins_with_one_name_keep_the_first_and_name_it(plugins) -> None:
    plugins.install("cdkd_aaa", METHOD.format(name="shared") + "\n@cdkd_bench.hookimpl\ndef cdkd_register_methods(register):\n    register(M)\n",
                    version="1.0")
    plugins.install("cdkd_bbb", METHOD.format(name="shared") + "\n@cdkd_bench.hookimpl\ndef cdkd_register_methods(register):\n    register(M)\n",
                    version="2.0")
    host = load_host()
    assert host.methods.entry("shared").plugin == "cdkd_aaa"
    assert {p.name: p.error for p in host.failed_plugins}["cdkd_bbb"] == (
        "method 'shared' is already registered by plugin 'cdkd_aaa' (distribution cdkd_aaa 1.0)"
    )


RAISING_RESOLVER = METHOD.format(name="resolver_plugin_method") + """
@cdkd_bench.hookimpl
def cdkd_register_methods(register):
    register(M)

@cdkd_bench.hookimpl(tryfirst=True)
def cdkd_resolve_architecture(name, num_classes, pretrained):
    raise RuntimeError("resolver bug")

@cdkd_bench.hookimpl
def cdkd_architecture_names():
    raise ValueError("lister bug")
"""


def test_a_raising_resolver_is_skipped_and_the_others_resolve(plugins, caplog: pytest.LogCaptureFixture) -> None:
    plugins.install("cdkd_bad_resolver", RAISING_RESOLVER)
    host = load_host()
    assert "resolver_plugin_method" in host.methods
    model = host.architecture("resnet10_w8_32px", 10)  # timm answers after the broken resolver is skipped
    assert model.num_classes == 10
    assert "resolver_plugin_method" not in host.methods  # its registrations are dropped
    assert "its architecture resolver raised RuntimeError: resolver bug" in {p.name: p.error for p in host.failed_plugins}["cdkd_bad_resolver"]
    assert any("cdkd_bad_resolver" in r.getMessage() and "skipped from now on" in r.getMessage() for r in caplog.records)


def test_a_raising_architecture_lister_does_not_break_list_archs(plugins, capsys: pytest.CaptureFixture[str]) -> None:
    plugins.install("cdkd_bad_lister", RAISING_RESOLVER.replace("tryfirst=True", "trylast=True"))
    assert main(["list", "archs", "--filter", "resnet10_w8*"]) == 0
    captured = capsys.readouterr()
    assert "resnet10_w8_32px" in captured.out
    assert "cdkd_bad_lister" in captured.err and "lister bug" in captured.err


OBSERVER = """
import cdkd_bench

@cdkd_bench.hookimpl
def cdkd_after_run(spec, result):
    raise ConnectionError("tracker is down")
"""


def test_a_failing_observer_is_named_once_and_the_grid_finishes(plugins, cache_dir: Path) -> None:
    plugins.install("cdkd_tracker", OBSERVER)
    host = load_host()
    messages: list[str] = []
    specs = expand(host, GridRequest(tasks=("textured_to_handwritten",), seeds=(0,), budget="smoke"))
    summary = run_grid(host, specs, Store(cache_dir.parent / "r.sqlite"), EngineSettings(cache_dir=cache_dir, device="cpu"),
                       show_progress=False, log=messages.append)
    assert (summary.done, summary.failed) == (3, 0)
    warnings = [m for m in messages if "cdkd_tracker" in m]
    assert len(warnings) == 1
    assert "plugin 'cdkd_tracker' (distribution cdkd_tracker 1.2.3) failed in cdkd_after_run: ConnectionError: tracker is down" in warnings[0]


def test_disabling_a_plugin_that_is_not_installed_is_said(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CDKD_BENCH_DISABLE_PLUGINS", "kdd,junk")
    assert main(["list", "methods"]) == 0
    err = capsys.readouterr().err
    assert "CDKD_BENCH_DISABLE_PLUGINS names 'kdd', which is not an installed plugin; did you mean 'kd'" in err
    assert "CDKD_BENCH_DISABLE_PLUGINS names 'junk', which is not an installed plugin" in err
