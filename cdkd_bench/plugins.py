"""The plugin manager: loads the ``cdkd_bench`` entry-point group into typed registries.

Torch-free: a command that asks for a few plugin families (``load_host(families=...)``)
imports only the plugins that provide them, found through the plugin index.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

import pluggy
from pluggy import HookImpl

from cdkd_bench import hookspecs
from cdkd_bench.declarations import FAMILIES, Domain, Executor, Selector, Suite
from cdkd_bench.errors import UserError, close_matches, unknown_name
from cdkd_bench.plugin_index import PLUGIN_FAMILIES, MethodTraits, PluginIndex, PluginRecord, family_of, index_path, source_key
from cdkd_bench.registry import RegistrationError, Registry

if TYPE_CHECKING:  # torch-bound, and needed only by the commands that load methods and networks
    from pathlib import Path

    from torch import nn

    from cdkd_bench.api import Method

ENTRY_POINT_GROUP = "cdkd_bench"
DISABLE_ENV = "CDKD_BENCH_DISABLE_PLUGINS"
TRACE_ENV = "CDKD_BENCH_TRACE"
# Registered names become file names (cache entries, leaderboard pages): no paths, no odd characters.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}")
log = logging.getLogger("cdkd_bench")


@dataclass(frozen=True)
class PluginInfo:
    """One entry point of the group: loaded, or skipped with the reason in ``error``."""

    name: str
    version: str
    distribution: str
    error: str | None = None

    def describe(self) -> str:
        where = f"{self.distribution} {self.version}".strip()
        return f"{self.name!r} (distribution {where})" if where else repr(self.name)


def disabled_plugins() -> set[str]:
    """Entry-point names listed (comma-separated) in ``CDKD_BENCH_DISABLE_PLUGINS``."""
    return {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}


# (hook, registry attribute, validation) in the order registrations are collected.
_REGISTRATIONS: tuple[tuple[str, str], ...] = (
    ("cdkd_register_domains", "domains"),
    ("cdkd_register_suites", "suites"),
    ("cdkd_register_methods", "methods"),
    ("cdkd_register_executors", "executors"),
    ("cdkd_register_selectors", "selectors"),
)


def call_impl(impl: HookImpl, **kwargs: Any) -> Any:
    """Call one plugin's implementation of a hook with the arguments it declares."""
    return impl.function(*(kwargs[name] for name in impl.argnames))


class Host:
    """Everything the loaded plugins provide, by kind.

    A plugin that misbehaves (a registration hook or resolver that raises, an invalid or
    duplicate registration) is reported by name and distribution and all of its
    registrations are dropped; the rest of the tool keeps working.
    """

    def __init__(self, pm: pluggy.PluginManager, plugins: list[PluginInfo], indexed: Mapping[str, PluginRecord] | None = None) -> None:
        self.pm = pm
        self.plugins = plugins
        # Plugins known only from the plugin index (a narrowed load did not import them):
        # their recorded names still take part in the duplicate-name rule, so a later
        # plugin is refused exactly as it would be with everything imported.
        self._indexed = dict(indexed or {})
        self._registered: dict[str, list[tuple[str, str]]] = {}
        self._versions = {p.name: p.version for p in plugins}
        self.domains: Registry[Domain] = Registry("domain")
        self.suites: Registry[Suite] = Registry("suite")
        self.methods: Registry[type[Method]] = Registry("method")
        self.executors: Registry[type[Executor]] = Registry("executor")
        self.selectors: Registry[Selector] = Registry("selection rule")
        self._register_all()

    @property
    def failed_plugins(self) -> list[PluginInfo]:
        return [p for p in self.plugins if p.error]

    def describe_plugin(self, name: str) -> str:
        info = next((p for p in self.plugins if p.name == name), None)
        return info.describe() if info else repr(name)

    def _loaded_in_order(self) -> list[str]:
        return [p.name for p in self.plugins if not p.error]

    def _imported_in_order(self) -> list[str]:
        return [name for name in self._loaded_in_order() if name not in self._indexed]

    def is_imported(self, plugin: str) -> bool:
        """True for a plugin whose module this process imported and registered (not one known from the index only)."""
        return plugin not in self._indexed and self.pm.has_plugin(plugin)

    def _impls(self, hook_name: str, plugin: str) -> list[HookImpl]:
        return [i for i in getattr(self.pm.hook, hook_name).get_hookimpls() if i.plugin_name == plugin]

    def _register_all(self) -> None:
        # Stage every plugin's registrations first, so a plugin failing in a later hook
        # loses the earlier ones too; then the first plugin in load order (built-ins
        # first) keeps a contested name and the later one is the faulty one.
        staged: dict[str, list[tuple[str, str, Any]]] = {name: [] for name in self._loaded_in_order()}
        for hook_name, attribute in _REGISTRATIONS:
            registry: Registry[Any] = getattr(self, attribute)
            for plugin, record in self._indexed.items():
                staged[plugin] += [(attribute, name, None) for name in record.names.get(family_of(hook_name), ())]
            for plugin in self._imported_in_order():
                def register(obj: Any, _plugin: str = plugin, _attribute: str = attribute, _kind: str = registry.kind) -> None:
                    staged[_plugin].append((_attribute, _check_registration(_kind, obj, _plugin), obj))

                for impl in self._impls(hook_name, plugin):
                    try:
                        call_impl(impl, register=register)
                    except RegistrationError as exc:
                        self._fail(plugin, str(exc))
                    except (Exception, SystemExit) as exc:  # noqa: BLE001 - a plugin's bug must not stop the tool
                        self._fail(plugin, f"{hook_name} raised {type(exc).__name__}: {exc}")
        owners: dict[tuple[str, str], str] = {}
        for plugin in self._loaded_in_order():
            mine: set[tuple[str, str]] = set()
            for attribute, name, _ in staged[plugin]:
                kind = getattr(self, attribute).kind
                if (attribute, name) in mine:
                    self._fail(plugin, f"it registers {kind} {name!r} twice")
                    break
                if (attribute, name) in owners:
                    self._fail(plugin, f"{kind} {name!r} is already registered by plugin {self.describe_plugin(owners[attribute, name])}")
                    break
                mine.add((attribute, name))
            else:
                owners.update(dict.fromkeys(mine, plugin))
        for plugin in self._imported_in_order():
            for attribute, name, obj in staged[plugin]:
                getattr(self, attribute).add(name, obj, plugin, self._versions.get(plugin, ""))
        self._registered = {plugin: [(attribute, name) for attribute, name, _ in staged[plugin]] for plugin in self._loaded_in_order()}

    def record(self, plugin: str) -> PluginRecord:
        """What an imported plugin provides, for the plugin index."""
        hooks = {caller.name for caller in self.pm.get_hookcallers(self.pm.get_plugin(plugin)) or ()}
        names: dict[str, tuple[str, ...]] = {}
        for hook_name, attribute in _REGISTRATIONS:
            mine = tuple(name for kind, name in self._registered.get(plugin, ()) if kind == attribute)
            if mine:
                names[family_of(hook_name)] = mine
        methods = {entry.name: MethodTraits.of(entry.value) for entry in self.methods if entry.plugin == plugin}
        return PluginRecord(frozenset(family_of(h) for h in hooks), names, methods, frozenset(hooks))

    def hooks_of(self, plugin: str) -> list[str]:
        """The hooks a usable plugin implements: from pluggy when it is imported, else from the plugin index."""
        if plugin in self._indexed:
            return sorted(self._indexed[plugin].hooks)
        if not self.pm.has_plugin(plugin):
            return []
        return sorted(caller.name for caller in self.pm.get_hookcallers(self.pm.get_plugin(plugin)) or ())

    def provided_by(self, plugin: str) -> dict[str, tuple[str, ...]]:
        """What a usable plugin registered, per family (``method``, ``suite``, …)."""
        if plugin in self._indexed:
            return dict(self._indexed[plugin].names)
        return dict(self.record(plugin).names) if self.pm.has_plugin(plugin) else {}

    def method_traits(self) -> dict[str, MethodTraits]:
        """Every usable method's traits: from its class when imported, else from the plugin index."""
        usable = set(self._loaded_in_order())
        traits = {name: t for plugin, record in self._indexed.items() if plugin in usable for name, t in record.methods.items()}
        traits.update({entry.name: MethodTraits.of(entry.value) for entry in self.methods})
        return traits

    def _fail(self, plugin: str, reason: str) -> None:
        """Mark a plugin as skipped, drop what it registered and stop calling its hooks."""
        self.plugins = [dataclasses.replace(p, error=p.error or reason) if p.name == plugin else p for p in self.plugins]
        for _, attribute in _REGISTRATIONS:
            getattr(self, attribute).remove_plugin(plugin)
        if self.pm.has_plugin(plugin):
            self.pm.unregister(name=plugin)

    def quarantine(self, plugin: str, reason: str) -> None:
        """A plugin failed while the tool was working: say so once and stop using it."""
        log.warning("plugin %s failed and is skipped from now on: %s", self.describe_plugin(plugin), reason)
        self._fail(plugin, reason)

    def notify(self, hook_name: str, **kwargs: Any) -> list[tuple[str, str]]:
        """Call every observer of ``hook_name``; returns (plugin, error) for those that raised."""
        errors = []
        for impl in reversed(getattr(self.pm.hook, hook_name).get_hookimpls()):
            try:
                call_impl(impl, **kwargs)
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - observers never stop a grid
                errors.append((impl.plugin_name, f"{type(exc).__name__}: {exc}"))
        return errors

    # ------------------------------------------------------------------ lookups

    def default(self, kind: str) -> str:
        """The name of the suite, selection rule or executor that its plugin marks as the default."""
        registries: dict[str, Registry[Any]] = {"suite": self.suites, "selection rule": self.selectors, "executor": self.executors}
        registry = registries[kind]
        marked = [entry.name for entry in registry if getattr(entry.value, "default", False)]
        if len(marked) == 1:
            return marked[0]
        known = ", ".join(registry.names()) or "none"
        if not marked:
            raise UserError(f"no installed {kind} is marked as the default; name one (installed: {known})")
        raise UserError(f"several installed {kind}s claim to be the default ({', '.join(marked)}); name one")

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

    def architecture(self, name: str, num_classes: int, pretrained: bool = False, weights: Path | None = None) -> nn.Module:
        """Ask each resolver in pluggy's order (the timm fallback last); the first model wins.

        ``pretrained`` loads the architecture's published weights, or the local file ``weights``
        when given (offline); a pretrained network then renormalises its inputs as its weights
        expect (see :class:`cdkd_bench.networks.NormalisedInput`).
        """
        for impl in reversed(self.pm.hook.cdkd_resolve_architecture.get_hookimpls()):
            try:
                model = call_impl(impl, name=name, num_classes=num_classes, pretrained=pretrained and weights is None)
            except UserError as exc:
                if pretrained and weights is None:
                    raise UserError(f"{exc}; or give a local weights file with --teacher-weights / --student-weights") from None
                raise
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - a broken resolver must not hide the others
                self.quarantine(impl.plugin_name, f"its architecture resolver raised {type(exc).__name__}: {exc}")
                continue
            if model is not None:
                if not pretrained:
                    return model
                from cdkd_bench.networks import with_input_statistics
                from cdkd_bench.weights import load_weights

                if weights is not None:
                    load_weights(model, weights, name)
                return with_input_statistics(model)
        known = self.architecture_names()
        matches = close_matches(name, known)
        hint = f"; did you mean {' or '.join(repr(m) for m in matches)}?" if matches else ""
        raise UserError(f"unknown architecture {name!r}{hint} (`cdkd-bench list archs` shows the {len(known)} known names)")

    def architecture_names(self) -> list[str]:
        return sorted({name for _, _, names in self.architecture_names_by_plugin() for name in names})

    def architecture_names_by_plugin(self) -> list[tuple[str, str, list[str]]]:
        """(plugin, version, names) for every plugin that lists architectures."""
        rows = []
        for impl in reversed(self.pm.hook.cdkd_architecture_names.get_hookimpls()):
            try:
                names = call_impl(impl)
                if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
                    raise TypeError(f"it returned {type(names).__name__}, not a list of names")
            except (Exception, SystemExit) as exc:  # noqa: BLE001
                self.quarantine(impl.plugin_name, f"cdkd_architecture_names raised {type(exc).__name__}: {exc}")
                continue
            rows.append((impl.plugin_name, self._versions.get(impl.plugin_name, ""), sorted(names)))
        return rows


def load_host(extra_plugins: Iterable[tuple[str, object]] = (), families: Iterable[str] | None = None) -> Host:
    """Load every entry point of the ``cdkd_bench`` group (minus disabled ones) into a Host.

    Built-in plugins load first, then the others by entry-point name. A plugin that fails
    to import (``sys.exit`` included) or implements a hook that does not exist is recorded
    with its error and the rest still load. ``extra_plugins`` are (name, module-or-object)
    pairs registered after the entry points.

    ``families`` (``"suite"``, ``"selector"``, … see ``plugin_index.FAMILY_OF_HOOK``) narrows
    the load for commands that need only those: a plugin the plugin index vouches for (same
    code, loaded cleanly before) and that provides none of them is listed but not imported.
    Every other plugin is imported exactly as without ``families``. None imports everything.
    """
    wanted = None if families is None else frozenset(families)
    if wanted is not None and not wanted <= PLUGIN_FAMILIES:
        raise ValueError(f"unknown plugin families {sorted(wanted - PLUGIN_FAMILIES)}; known: {sorted(PLUGIN_FAMILIES)}")
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    if os.environ.get(TRACE_ENV):
        pm.trace.root.setwriter(lambda text: sys.stderr.write(text))
        pm.enable_tracing()
    skip = disabled_plugins()
    found = sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: (_distribution(e) != BUILTIN_DISTRIBUTION, e.name))
    _warn_unknown_disabled(skip, {ep.name for ep in found})
    index = PluginIndex(index_path())
    keys: dict[str, dict[str, Any] | None] = {}
    indexed: dict[str, PluginRecord] = {}
    infos: list[PluginInfo] = []
    for ep in found:
        if ep.name in skip:
            pm.set_blocked(ep.name)  # pluggy's own blocking: nothing registers under that name in this process
            continue
        version, distribution = (ep.dist.version if ep.dist else ""), _distribution(ep)
        if pm.has_plugin(ep.name) or any(p.name == ep.name for p in infos):
            infos.append(PluginInfo(ep.name, version, distribution, f"entry point name {ep.name!r} is used twice"))
            continue
        keys[ep.name] = source_key(ep, distribution, version)
        record = index.fresh(ep.name, keys[ep.name])
        if wanted is not None and record is not None and not record.families & wanted:
            infos.append(PluginInfo(ep.name, version, distribution))  # listed, not imported: the index vouches for it
            indexed[ep.name] = record
            continue
        try:
            plugin = ep.load()
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - any import failure of a plugin is reported, not fatal
            infos.append(PluginInfo(ep.name, version, distribution, f"{type(exc).__name__} while importing: {exc}"))
            continue
        infos.append(PluginInfo(ep.name, version, distribution, _register(pm, ep.name, plugin)))
    for name, plugin in extra_plugins:
        infos.append(PluginInfo(name, "", "", _register(pm, name, plugin)))
    host = Host(pm, infos, indexed)
    _update_index(index, host, keys)
    index.save(installed={ep.name for ep in found})
    return host


def _update_index(index: PluginIndex, host: Host, keys: Mapping[str, dict[str, Any] | None]) -> None:
    """Record every imported plugin that loaded cleanly; forget every one that failed, so it is imported next time."""
    failed = {info.name for info in host.failed_plugins}
    for name, key in keys.items():
        if name in failed:
            index.forget(name)
        elif key is not None and host.is_imported(name):
            record = host.record(name)
            if index.fresh(name, key) != record and _lists_architectures_cleanly(host, name):
                index.record(name, key, record)


def _lists_architectures_cleanly(host: Host, plugin: str) -> bool:
    """Whether the plugin's architecture lister, if it has one, answers with a list of names.

    ``cdkd-bench plugins`` calls the lister of every plugin it imports, so the index vouches
    only for plugins whose lister would not have failed there. Asked only when a plugin's
    entry is new or changed; a failure here only keeps the plugin out of the index.
    """
    for impl in host.pm.hook.cdkd_architecture_names.get_hookimpls():
        if impl.plugin_name != plugin:
            continue
        try:
            names = call_impl(impl)
        except (Exception, SystemExit):  # noqa: BLE001
            return False
        if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
            return False
    return True


BUILTIN_DISTRIBUTION = "cdkd-bench"


def _distribution(ep: Any) -> str:
    return str(ep.dist.metadata["Name"]) if ep.dist else ""


def _register(pm: pluggy.PluginManager, name: str, plugin: object) -> str | None:
    """Register one plugin; the reason it cannot be used, or None."""
    unknown = [
        attr for attr in dir(plugin)
        if attr.startswith("cdkd_") and pm.parse_hookimpl_opts(plugin, attr) is not None and not hasattr(hookspecs, attr)
    ]
    if unknown:
        hooks = [h for h in dir(hookspecs) if h.startswith("cdkd_")]
        matches = close_matches(unknown[0], hooks)
        hint = f"; did you mean {' or '.join(repr(m) for m in matches)}?" if matches else ""
        return f"it implements hook {unknown[0]!r}, which does not exist{hint}"
    try:
        pm.register(plugin, name=name)
    except (pluggy.PluginValidationError, ValueError) as exc:
        return f"it cannot be registered: {exc}"
    return None


def _warn_unknown_disabled(skip: set[str], installed: set[str]) -> None:
    for name in sorted(skip - installed):
        matches = close_matches(name, installed)
        hint = f"; did you mean {' or '.join(repr(m) for m in matches)}?" if matches else ""
        log.warning("%s names %r, which is not an installed plugin%s (installed: %s)",
                    DISABLE_ENV, name, hint, ", ".join(sorted(installed)))


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
    from cdkd_bench.api import Method  # here, not above: only loads that include method plugins may import torch

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


_CHECKS = {
    "domain": _check_domain,
    "suite": _check_suite,
    "method": _check_method,
    "executor": _check_executor,
    "selection rule": _check_selector,
}


def _check_registration(kind: str, obj: Any, plugin: str) -> str:
    """Validate one registration; its name, which must be safe to use in a file name."""
    name = _CHECKS[kind](obj, plugin)
    names = [name, *(task.name for task in obj.tasks)] if kind == "suite" else [name]
    for each in names:
        if not isinstance(each, str) or not NAME_PATTERN.fullmatch(each):
            raise RegistrationError(
                f"plugin {plugin!r} registered a {kind} named {each!r}; names are letters, digits and _ . + - "
                "(starting with a letter or digit, at most 100 characters)"
            )
    return name
