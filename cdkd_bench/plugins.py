"""The plugin manager: loads the ``cdkd_bench`` entry-point group into typed registries."""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

import pluggy
from torch import nn

from cdkd_bench import hookspecs
from cdkd_bench.api import FAMILIES, Domain, Executor, Method, Selector, Suite
from cdkd_bench.errors import UserError, close_matches, unknown_name
from cdkd_bench.registry import RegistrationError, Registry

ENTRY_POINT_GROUP = "cdkd_bench"
DISABLE_ENV = "CDKD_BENCH_DISABLE_PLUGINS"
TRACE_ENV = "CDKD_BENCH_TRACE"


@dataclass(frozen=True)
class PluginInfo:
    """One entry point of the group, loaded or not."""

    name: str
    version: str
    distribution: str
    error: str | None = None


def disabled_plugins() -> set[str]:
    """Entry-point names listed (comma-separated) in ``CDKD_BENCH_DISABLE_PLUGINS``."""
    return {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}


class Host:
    """Everything the loaded plugins provide, by kind."""

    def __init__(self, pm: pluggy.PluginManager, plugins: list[PluginInfo]) -> None:
        self.pm = pm
        self.plugins = plugins
        self._versions = {p.name: p.version for p in plugins}
        self.domains: Registry[Domain] = Registry("domain")
        self.suites: Registry[Suite] = Registry("suite")
        self.methods: Registry[type[Method]] = Registry("method")
        self.executors: Registry[type[Executor]] = Registry("executor")
        self.selectors: Registry[Selector] = Registry("selection rule")
        self._collect("cdkd_register_domains", self.domains, _check_domain)
        self._collect("cdkd_register_suites", self.suites, _check_suite)
        self._collect("cdkd_register_methods", self.methods, _check_method)
        self._collect("cdkd_register_executors", self.executors, _check_executor)
        self._collect("cdkd_register_selectors", self.selectors, _check_selector)

    @property
    def failed_plugins(self) -> list[PluginInfo]:
        return [p for p in self.plugins if p.error]

    def _collect(self, hook_name: str, registry: Registry[Any], check: Callable[[Any, str], str]) -> None:
        # Each plugin's implementation is called on its own so every registration is
        # attributed to the plugin that made it (needed for duplicate-name errors).
        everyone = self.pm.get_plugins()
        for plugin in everyone:
            plugin_name = self.pm.get_name(plugin) or repr(plugin)
            caller = self.pm.subset_hook_caller(hook_name, [p for p in everyone if p is not plugin])

            def register(obj: Any, _plugin: str = plugin_name) -> None:
                registry.add(check(obj, _plugin), obj, _plugin, self._versions.get(_plugin, ""))

            caller(register=register)

    # ------------------------------------------------------------------ lookups

    def suite(self, name: str) -> Suite:
        suite = self.suites.get(name)
        for domain in suite.domains:
            if domain not in self.domains:
                raise UserError(
                    f"suite {name!r} needs domain {domain!r}, which no loaded plugin provides"
                    " (is its plugin disabled or broken? see `cdkd-bench plugins`)"
                )
        return suite

    def task(self, suite: Suite, name: str) -> Any:
        by_name = {t.name: t for t in suite.tasks}
        if name in by_name:
            return by_name[name]
        # Allow the short form ("fonts_to_handwritten") as well as the full name.
        full = f"{suite.name}.{name}"
        if full in by_name:
            return by_name[full]
        raise unknown_name(f"task of suite {suite.name!r}", name, by_name)

    def architecture(self, name: str, num_classes: int, pretrained: bool = False) -> nn.Module:
        model = self.pm.hook.cdkd_resolve_architecture(name=name, num_classes=num_classes, pretrained=pretrained)
        if model is None:
            known = self.architecture_names()
            matches = close_matches(name, known)
            hint = f"; did you mean {' or '.join(repr(m) for m in matches)}?" if matches else ""
            raise UserError(
                f"unknown architecture {name!r}{hint} (`cdkd-bench list archs` shows the {len(known)} known names)"
            )
        return model

    def architecture_names(self) -> list[str]:
        names: list[str] = []
        for chunk in self.pm.hook.cdkd_architecture_names():
            names.extend(chunk)
        return sorted(set(names))

    def architecture_names_by_plugin(self) -> list[tuple[str, str, list[str]]]:
        """(plugin, version, names) for every plugin that lists architectures."""
        rows = []
        for impl in self.pm.hook.cdkd_architecture_names.get_hookimpls():
            names: list[str] = impl.function()  # type: ignore[assignment]
            rows.append((impl.plugin_name, self._versions.get(impl.plugin_name, ""), sorted(names)))
        return rows


def load_host(extra_plugins: Iterable[tuple[str, object]] = ()) -> Host:
    """Load every entry point of the ``cdkd_bench`` group (minus disabled ones) into a Host.

    A plugin that fails to import is recorded with its error and the rest still load.
    ``extra_plugins`` are (name, module-or-object) pairs registered after the entry points.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    if os.environ.get(TRACE_ENV):
        pm.trace.root.setwriter(lambda text: sys.stderr.write(text))
        pm.enable_tracing()
    skip = disabled_plugins()
    infos: list[PluginInfo] = []
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        dist = ep.dist.metadata["Name"] if ep.dist else ""
        version = ep.dist.version if ep.dist else ""
        if ep.name in skip:
            continue
        if pm.has_plugin(ep.name):
            infos.append(PluginInfo(ep.name, version, dist, f"entry point name {ep.name!r} is used twice"))
            continue
        try:
            module = ep.load()
            pm.register(module, name=ep.name)
        except Exception as exc:  # noqa: BLE001 - any import failure of a plugin is reported, not fatal
            infos.append(PluginInfo(ep.name, version, dist, f"{type(exc).__name__}: {exc}"))
            continue
        infos.append(PluginInfo(ep.name, version, dist))
    for name, plugin in extra_plugins:
        pm.register(plugin, name=name)
        infos.append(PluginInfo(name, "", ""))
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise RegistrationError(f"a plugin implements a hook that does not exist: {exc}") from None
    return Host(pm, infos)


# ---------------------------------------------------------------------- validation of registrations


def _check_domain(obj: Any, plugin: str) -> str:
    if not isinstance(obj, Domain):
        raise RegistrationError(f"plugin {plugin!r} registered {obj!r} as a domain; expected a cdkd_bench.Domain")
    if obj.num_classes < 2:
        raise RegistrationError(f"plugin {plugin!r}: domain {obj.name!r} needs at least 2 classes")
    return obj.name


def _check_suite(obj: Any, plugin: str) -> str:
    if not isinstance(obj, Suite):
        raise RegistrationError(f"plugin {plugin!r} registered {obj!r} as a suite; expected a cdkd_bench.Suite")
    if obj.default_budget not in obj.budgets:
        raise RegistrationError(
            f"plugin {plugin!r}: suite {obj.name!r} has default budget {obj.default_budget!r}, not one of its budgets"
        )
    return obj.name


def _check_method(obj: Any, plugin: str) -> str:
    if not (isinstance(obj, type) and issubclass(obj, Method)):
        raise RegistrationError(f"plugin {plugin!r} registered {obj!r} as a method; expected a cdkd_bench.Method subclass")
    name = getattr(obj, "name", None)
    if not isinstance(name, str) or not name.isidentifier():
        raise RegistrationError(f"plugin {plugin!r}: method {obj.__name__} needs a `name` that is a Python identifier")
    if not isinstance(obj.version, int) or obj.version < 1:
        raise RegistrationError(f"plugin {plugin!r}: method {name!r} needs an integer `version` >= 1")
    if obj.family not in FAMILIES:
        raise RegistrationError(f"plugin {plugin!r}: method {name!r} has family {obj.family!r}; use one of {FAMILIES}")
    hparams = obj.Hparams
    if not dataclasses.is_dataclass(hparams) or not hparams.__dataclass_params__.frozen:  # type: ignore[attr-defined]
        raise RegistrationError(f"plugin {plugin!r}: method {name!r} needs a frozen dataclass `Hparams`")
    for f in dataclasses.fields(hparams):
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise RegistrationError(f"plugin {plugin!r}: hparam {name}.{f.name} needs a default")
    return name


def _check_executor(obj: Any, plugin: str) -> str:
    if not (isinstance(obj, type) and issubclass(obj, Executor) and isinstance(getattr(obj, "name", None), str)):
        raise RegistrationError(f"plugin {plugin!r} registered {obj!r}; expected a named cdkd_bench.Executor subclass")
    return obj.name


def _check_selector(obj: Any, plugin: str) -> str:
    if not isinstance(obj, Selector):
        raise RegistrationError(f"plugin {plugin!r} registered {obj!r}; expected a cdkd_bench.Selector")
    return obj.name
