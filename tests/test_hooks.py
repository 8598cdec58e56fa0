"""Every hook is documented in docs/hooks.md and has a test of its own here (``test_hook_<name>``), and every
built-in plugin module is registered through an entry point, like a third party's."""

from __future__ import annotations

import ast
import inspect
import re
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
import torch

from cdkd_bench import (
    Augmentation,
    Budget,
    DataContext,
    Domain,
    Executor,
    Method,
    RegisterDomains,
    RegisterExecutors,
    RegisterMethods,
    RegisterSelectors,
    RegisterSuites,
    Selector,
    Step,
    Suite,
    hookimpl,
    hookspecs,
)
from cdkd_bench.api import DomainData
from cdkd_bench.engine import EngineSettings
from cdkd_bench.grid import GridRequest, expand, run_grid
from cdkd_bench.plugins import ENTRY_POINT_GROUP, load_host
from cdkd_bench.store import Store

ROOT = Path(__file__).resolve().parent.parent
HOOKS = sorted(n for n in dir(hookspecs) if n.startswith("cdkd_"))


def _headings() -> list[str]:
    return re.findall(r"^## (cdkd_\w+)$", (ROOT / "docs" / "hooks.md").read_text(encoding="utf-8"), flags=re.M)


@pytest.mark.parametrize("name", HOOKS)
def test_every_hook_is_documented_in_hooks_md(name: str) -> None:
    assert name in _headings(), f"docs/hooks.md has no '## {name}' section"


def test_hooks_md_documents_no_hook_that_does_not_exist() -> None:
    assert sorted(_headings()) == HOOKS


@pytest.mark.parametrize("name", HOOKS)
def test_every_hook_has_a_test_of_its_own(name: str) -> None:
    test_name = f"test_hook_{name.removeprefix('cdkd_')}"
    assert callable(globals().get(test_name)), f"tests/test_hooks.py has no {test_name}"


def _hookimpl_modules() -> list[str]:
    """Modules under plugins/ that define a hook implementation (helpers they import do not)."""
    found = []
    for path in sorted((ROOT / "plugins").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        decorated = [d for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) for d in node.decorator_list]
        if any("hookimpl" in ast.unparse(d) for d in decorated):
            found.append("cdkd_plugins." + ".".join(path.relative_to(ROOT / "plugins").with_suffix("").parts))
    return found


def test_every_builtin_plugin_module_has_an_entry_point() -> None:
    registered = {ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    modules = _hookimpl_modules()
    assert len(modules) > 20
    missing = [m for m in modules if m not in registered]
    assert not missing, f"plugin modules without an entry point in pyproject.toml: {missing}"


# --------------------------------------------------------------------------- one test per hook


def _tiny_images(context: DataContext) -> DomainData:  # noqa: ARG001 - generated
    generator = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (12, 3, 8, 8), dtype=torch.uint8, generator=generator)
    return DomainData(x[:8], torch.arange(8) % 2, x[8:], torch.arange(4) % 2)


class DomainsPlugin:
    @hookimpl
    def cdkd_register_domains(self, register: RegisterDomains) -> None:
        register(Domain("tiny.left", 2, _tiny_images, description="two classes of noise"))


def test_hook_register_domains() -> None:
    host = load_host(extra_plugins=[("tiny_domains", DomainsPlugin())])
    assert host.domains.entry("tiny.left").plugin == "tiny_domains"
    data = host.domains.get("tiny.left").load(DataContext(None, Path(".")))  # type: ignore[misc]
    assert data.train_x.shape == (8, 3, 8, 8)


class SuitesPlugin:
    @hookimpl
    def cdkd_register_suites(self, register: RegisterSuites) -> None:
        register(Suite(name="tinysuite", domains=("embedded.printed", "embedded.handwritten"), num_classes=10, image_size=32,
                       budgets={"smoke": Budget(teacher_steps=2, student_steps=1)}, default_budget="smoke",
                       default_teacher="resnet10_w8_32px",
                       default_student="resnet10_w8_32px", teacher_augmentation=Augmentation()))


def test_hook_register_suites() -> None:
    host = load_host(extra_plugins=[("tiny_suites", SuitesPlugin())])
    suite = host.suite("tinysuite")
    assert [t.name for t in suite.tasks] == ["tinysuite.embedded.printed_to_embedded.handwritten",
                                            "tinysuite.embedded.handwritten_to_embedded.printed"]


class Halves(Method):
    """Half the source cross-entropy again (a method only this test knows)."""

    name = "halves"
    family = "baseline"

    @dataclass(frozen=True)
    class Hparams:
        pass

    def loss(self, step: Step) -> dict[str, torch.Tensor]:
        assert step.source.y is not None
        return {"half_ce": 0.5 * torch.nn.functional.cross_entropy(step.student("source").logits, step.source.y)}


class MethodsPlugin:
    @hookimpl
    def cdkd_register_methods(self, register: RegisterMethods) -> None:
        register(Halves)


def test_hook_register_methods() -> None:
    host = load_host(extra_plugins=[("tiny_methods", MethodsPlugin())])
    assert host.methods.get("halves") is Halves and host.methods.entry("halves").plugin == "tiny_methods"


class ArchitecturePlugin:
    @hookimpl
    def cdkd_resolve_architecture(self, name: str, num_classes: int, pretrained: bool) -> Any:  # noqa: ARG002
        if name != "tiny_resnet":
            return None
        import timm

        return timm.create_model("resnet10_w8_32px", num_classes=num_classes)

    @hookimpl
    def cdkd_architecture_names(self) -> list[str]:
        return ["tiny_resnet"]


def test_hook_resolve_architecture() -> None:
    host = load_host(extra_plugins=[("tiny_archs", ArchitecturePlugin())])
    model = host.architecture("tiny_resnet", 3)
    assert model.get_classifier().out_features == 3  # type: ignore[operator]
    assert type(host.architecture("resnet10_w8_32px", 3)).__name__ == "ResNet"  # other names still reach timm


def test_hook_architecture_names() -> None:
    host = load_host(extra_plugins=[("tiny_archs", ArchitecturePlugin())])
    assert "tiny_resnet" in host.architecture_names()
    assert ("tiny_archs", "", ["tiny_resnet"]) in host.architecture_names_by_plugin()


class InlineExecutor(Executor):
    """Runs every job in this process, in order (what `local` does with one worker)."""

    name = "inline"

    def run(self, jobs, on_result, ready=None):  # type: ignore[no-untyped-def]
        from cdkd_bench import run_job

        for index, job in enumerate(jobs):
            known = ready(index) if ready is not None else None
            on_result(index, known if known is not None else run_job(job))


class ExecutorsPlugin:
    @hookimpl
    def cdkd_register_executors(self, register: RegisterExecutors) -> None:
        register(InlineExecutor)


def test_hook_register_executors() -> None:
    host = load_host(extra_plugins=[("tiny_executors", ExecutorsPlugin())])
    assert host.executors.get("inline") is InlineExecutor
    seen: list[tuple[int, Any]] = []
    InlineExecutor().run([], lambda i, r: seen.append((i, r)))
    assert seen == []


def _first(history: list[Any]) -> int:
    return 0


class SelectorsPlugin:
    @hookimpl
    def cdkd_register_selectors(self, register: RegisterSelectors) -> None:
        register(Selector("first", choose=_first, description="the first checkpoint"))


def test_hook_register_selectors() -> None:
    host = load_host(extra_plugins=[("tiny_selectors", SelectorsPlugin())])
    assert host.selectors.get("first").choose([{"step": 1}, {"step": 2}]) == 0


class Observer:
    def __init__(self) -> None:
        self.before: list[dict[str, Any]] = []
        self.after: list[tuple[dict[str, Any], dict[str, Any]]] = []

    @hookimpl
    def cdkd_before_run(self, spec: Any) -> None:
        self.before.append(dict(spec))

    @hookimpl
    def cdkd_after_run(self, spec: Any, result: Any) -> None:
        self.after.append((dict(spec), dict(result)))


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory, session_data: Path) -> Observer:
    """One smoke grid of one recipe, watched by an observer plugin."""
    observer = Observer()
    host = load_host(extra_plugins=[("tiny_observer", observer)])
    cache = tmp_path_factory.mktemp("observed")
    (cache / "data").symlink_to(session_data, target_is_directory=True)
    request = GridRequest(tasks=("printed_to_handwritten",), seeds=(0,), budget="smoke", recipes=("source_only",))
    specs = [s for s in expand(host, request, cache) if s.recipe == "source_only"]
    run_grid(host, specs, Store(cache / "r.sqlite"), EngineSettings(cache_dir=cache, device="cpu"), show_progress=False,
             log=lambda _m: None)
    return observer


def test_hook_before_run(observed: Observer) -> None:
    assert [s["recipe"] for s in observed.before] == ["source_only"]
    assert observed.before[0]["task"] == "embedded.printed_to_handwritten"


def test_hook_after_run(observed: Observer) -> None:
    (spec, result), = observed.after
    assert spec == observed.before[0]
    assert result["status"] == "done" and 0 <= result["metrics"]["target_test.acc"] <= 100


def test_the_hook_tests_cover_exactly_the_hooks() -> None:
    tests = {name.removeprefix("test_hook_") for name, _ in inspect.getmembers(__import__(__name__), inspect.isfunction)
             if name.startswith("test_hook_")}
    assert tests == {h.removeprefix("cdkd_") for h in HOOKS}


# --------------------------------------------------------------------------- the plugin commands


def test_plugins_lists_each_plugins_hooks_and_what_it_provides(capsys: pytest.CaptureFixture[str]) -> None:
    from cdkd_bench.cli import main

    assert main(["plugins"]) == 0
    lines = capsys.readouterr().out.splitlines()
    kd = lines.index(next(line for line in lines if line.split()[:1] == ["kd"]))
    assert "loaded" in lines[kd]
    assert lines[kd + 1].split() == ["hooks:", "cdkd_register_methods;", "provides", "method:", "kd"]


def test_plugins_check_runs_the_conformance_checks_of_one_plugin(capsys: pytest.CaptureFixture[str]) -> None:
    from cdkd_bench.cli import main

    assert main(["plugins", "check", "last"]) == 0
    out = capsys.readouterr().out
    assert "ok      'last' (distribution cdkd-bench" in out and "selection rule 'last'" in out and "1 of 1 checks passed" in out
    assert main(["plugins", "check", "lats"]) == 2
    assert "did you mean 'last'" in capsys.readouterr().err


BROKEN_SELECTOR = """
import cdkd_bench

@cdkd_bench.hookimpl
def cdkd_register_selectors(register):
    register(cdkd_bench.Selector("past_the_end", choose=lambda history: len(history)))
"""


def test_plugins_check_names_the_plugin_its_distribution_and_what_to_fix(plugins, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    from cdkd_bench.cli import main

    plugins.install("cdkd_past_the_end", BROKEN_SELECTOR)
    assert main(["plugins", "check", "cdkd_past_the_end"]) == 1
    out = capsys.readouterr().out
    assert "FAILED  'cdkd_past_the_end' (distribution cdkd_past_the_end 1.2.3): selection rule 'past_the_end': " in out
    assert "0 of 1 checks passed" in out
