"""`cdkd-bench plugins check [NAME]`: the conformance checks of :mod:`cdkd_bench.testing` on installed plugins."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from cdkd_bench.errors import UserError, close_matches
from cdkd_bench.locations import default_data_root
from cdkd_bench.plugins import Host, load_host

ARCHITECTURES_CHECKED = 8
"""A resolver that lists more names than this (timm's thousand) is checked on the names the installed suites use."""


def check_installed_plugins(name: str | None = None, host: Host | None = None) -> list[tuple[str, str, str | None]]:
    """(plugin, what was checked, problem or None) for every check of the installed plugins (only ``name`` when given).

    A plugin that did not load is a failure too; a domain whose files are not under the data
    root is checked as far as it can be without them (its declaration), not failed.
    """
    from cdkd_bench import conformance

    host = host or load_host()
    plugins = {info.name: info for info in host.plugins}
    if name is not None and name not in plugins:
        matches = close_matches(name, plugins)
        hint = f"; did you mean {' or '.join(repr(m) for m in matches)}?" if matches else ""
        raise UserError(f"no installed plugin is called {name!r}{hint} (`cdkd-bench plugins` lists them)")
    results: list[tuple[str, str, str | None]] = []
    for plugin, info in plugins.items():
        if name is not None and plugin != name:
            continue
        if info.error:
            results.append((info.describe(), "loading", f"it did not load: {info.error}"))
            continue
        for what, check in _checks(host, plugin, conformance):
            try:
                check()
            except (AssertionError, UserError) as exc:
                results.append((info.describe(), what, str(exc)))
            except Exception as exc:  # noqa: BLE001 - a check that crashes is a failure to report, not to raise
                results.append((info.describe(), what, f"the check raised {type(exc).__name__}: {exc}"))
            else:
                results.append((info.describe(), what, None))
    return results


def _checks(host: Host, plugin: str, conformance: Any) -> list[tuple[str, Callable[[], Any]]]:
    """Each check to run for what ``plugin`` registered, with a label naming the thing checked."""
    from cdkd_bench.testing import check_method

    checks: list[tuple[str, Callable[[], Any]]] = []
    checks += [(f"method {m.name!r}", partial(check_method, m.value)) for m in host.methods if m.plugin == plugin]
    # Generated domains are made and checked in full; file-backed ones as far as their files are there.
    checks += [(f"domain {d.name!r}", partial(conformance.check_domain, d.value, default_data_root(), load=_has_files(d.value)))
               for d in host.domains if d.plugin == plugin]
    checks += [(f"suite {s.name!r}", partial(conformance.check_suite, s.value, host)) for s in host.suites if s.plugin == plugin]
    checks += [(f"selection rule {r.name!r}", partial(conformance.check_selector, r.value))
               for r in host.selectors if r.plugin == plugin]
    checks += [(f"executor {e.name!r}", partial(conformance.check_executor, e.value)) for e in host.executors if e.plugin == plugin]
    checks += [(f"architecture {a!r}", partial(conformance.check_architecture, a, host=host)) for a in _architectures_of(host, plugin)]
    return checks


def _has_files(domain: Any) -> bool:
    """Whether a domain can be loaded here: generated, or its files found under the data root."""
    if domain.locate is None:
        return True
    from cdkd_bench.api import DataContext
    from cdkd_bench.locations import default_cache_dir

    try:
        domain.locate(DataContext(default_data_root(), default_cache_dir() / "raw" / domain.name))
    except UserError:
        return False
    return True


def _architectures_of(host: Host, plugin: str) -> list[str]:
    for owner, _, names in host.architecture_names_by_plugin():
        if owner != plugin:
            continue
        if len(names) <= ARCHITECTURES_CHECKED:
            return list(names)
        used = {arch for entry in host.suites for arch in (entry.value.default_teacher, entry.value.default_student)}
        return sorted(used & set(names))
    return []
