"""The plugin index: what each installed entry point registered when it last loaded cleanly.

Importing a plugin can cost seconds (the method zoo imports torch). A command that needs
only suites and selection rules reads this small JSON file in the cache folder and imports
only the plugins that provide those, plus any plugin the index does not vouch for: one it
has never seen, one whose code changed since (another source file, size or modification
time, another distribution version), and one that failed last time. The file is a cache:
unreadable or corrupt means empty, and failing to write it never fails a command.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cdkd_bench.errors import UserError
from cdkd_bench.folders import replace_atomically
from cdkd_bench.locations import default_cache_dir

INDEX_FILE = "plugin-index.json"
FORMAT = 3  # 2: entries record the hooks each plugin implements; 3: and each method's version

# What a plugin provides, by the hooks it implements; a command names the families it needs.
FAMILY_OF_HOOK = {
    "cdkd_register_domains": "domain",
    "cdkd_register_suites": "suite",
    "cdkd_register_methods": "method",
    "cdkd_register_executors": "executor",
    "cdkd_register_selectors": "selector",
    "cdkd_resolve_architecture": "architecture",
    "cdkd_architecture_names": "architecture",
    "cdkd_before_run": "observer",
    "cdkd_after_run": "observer",
}
PLUGIN_FAMILIES = frozenset(FAMILY_OF_HOOK.values())


def family_of(hook_name: str) -> str:
    """The family of a hook; a hook this table does not know yet is a family of its own."""
    return FAMILY_OF_HOOK.get(hook_name, hook_name)


@dataclass(frozen=True)
class MethodTraits:
    """What leaderboard tables read from a method class (which row it is), kept so they need not import it."""

    reference: bool = False
    uses_target_labels: bool = False
    version: int | None = None
    """The installed implementation's version: merged results must match the implementation they claim."""

    @classmethod
    def of(cls, method: type) -> MethodTraits:
        version = getattr(method, "version", None)
        return cls(bool(getattr(method, "reference", False)), bool(getattr(method, "uses_target_labels", False)),
                   version if isinstance(version, int) and not isinstance(version, bool) else None)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MethodTraits:
        version = data.get("version")
        if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
            raise ValueError(f"a method version must be an integer, got {version!r}")
        return cls(bool(data.get("reference", False)), bool(data.get("uses_target_labels", False)), version)


@dataclass(frozen=True)
class PluginRecord:
    """What one plugin registered: its families, its names per family in registration order, its methods' traits."""

    families: frozenset[str]
    names: Mapping[str, tuple[str, ...]]
    methods: Mapping[str, MethodTraits]
    hooks: frozenset[str] = frozenset()
    """The hooks it implements (``cdkd-bench plugins`` lists them without importing it)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "hooks": sorted(self.hooks),
            "families": sorted(self.families),
            "names": {family: list(names) for family, names in sorted(self.names.items())},
            "methods": {name: vars(traits) for name, traits in sorted(self.methods.items())},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PluginRecord:
        """Raises on anything malformed; the caller drops the entry."""
        families = frozenset(_strings(data["families"]))
        names = {str(family): tuple(_strings(values)) for family, values in dict(data["names"]).items()}
        methods = {str(name): MethodTraits.from_json(dict(traits)) for name, traits in dict(data["methods"]).items()}
        hooks = frozenset(_strings(data.get("hooks", [])))  # absent from entries written before it was recorded
        return cls(families, names, methods, hooks)


def _strings(values: Any) -> list[str]:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise TypeError("expected a list of names")
    return values


def source_key(entry_point: Any, distribution: str, version: str) -> dict[str, Any] | None:
    """What identifies the code behind an entry point: any change to it makes an index entry stale.

    The module's file is located without running it (``find_spec`` imports only its parent
    packages). None when there is no source file to check (a namespace package, a module
    that cannot be found): such a plugin is always imported.
    """
    try:
        spec = importlib.util.find_spec(entry_point.module)
        origin = spec.origin if spec is not None else None
        if not origin or not os.path.isfile(origin):
            return None
        stat = os.stat(origin)
    except (Exception, SystemExit):  # noqa: BLE001 - importing it will report the problem properly
        return None
    return {
        "entry_point": entry_point.name,
        "value": entry_point.value,
        "distribution": distribution,
        "version": version,
        "path": origin,
        "mtime_ns": stat.st_mtime_ns,
        "size": stat.st_size,
    }


def index_path() -> Path:
    return default_cache_dir() / INDEX_FILE


class PluginIndex:
    """The index file's entries by entry-point name, with this process's changes kept apart until ``save``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._entries = _read(path)
        self._changes: dict[str, dict[str, Any] | None] = {}

    def fresh(self, name: str, key: Mapping[str, Any] | None) -> PluginRecord | None:
        """The record of ``name`` if the index holds one for exactly this code, else None."""
        entry = self._changes[name] if name in self._changes else self._entries.get(name)
        if key is None or entry is None or entry.get("key") != key:
            return None
        try:
            return PluginRecord.from_json(entry)
        except (KeyError, TypeError, ValueError, AttributeError):
            return None

    def record(self, name: str, key: Mapping[str, Any], record: PluginRecord) -> None:
        self._changes[name] = {"key": dict(key), **record.to_json()}

    def forget(self, name: str) -> None:
        self._changes[name] = None

    def save(self, installed: Iterable[str]) -> None:
        """Apply this process's changes to the file as it is now (another process may have written it), atomically.

        Entries of plugins no longer installed are dropped. Nothing is written when nothing
        changed; a folder that cannot be written just means no index.
        """
        current = _read(self.path)
        merged = {**current, **self._changes}
        keep = set(installed)
        entries = {name: entry for name, entry in sorted(merged.items()) if entry is not None and name in keep}
        if entries == current:
            return
        text = json.dumps({"format": FORMAT, "plugins": entries}, indent=1, sort_keys=True)
        try:
            replace_atomically(self.path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), "")
        except (UserError, OSError):
            return


def _read(path: Path) -> dict[str, dict[str, Any]]:
    """The entries of the index file; empty when it is missing, unreadable, corrupt or of another format."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("plugins"), dict):
        return {}
    return {str(name): entry for name, entry in data["plugins"].items() if isinstance(entry, dict)}
