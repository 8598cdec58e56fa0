"""Typed registries: one per kind of plugin object, strict about names."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from cdkd_bench.errors import unknown_name

T = TypeVar("T")


class RegistrationError(Exception):
    """A plugin registered something invalid or a name twice; a plugin author's bug."""


@dataclass(frozen=True)
class Entry(Generic[T]):
    """A registered object and where it came from."""

    name: str
    value: T
    plugin: str
    plugin_version: str


class Registry(Generic[T]):
    """Names to objects of one kind; duplicates are errors and unknown names get suggestions."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def add(self, name: str, value: T, plugin: str, plugin_version: str = "") -> None:
        if not isinstance(name, str) or not name:
            raise RegistrationError(f"plugin {plugin!r} registered a {self.kind} without a name")
        if name in self._entries:
            first = self._entries[name].plugin
            raise RegistrationError(
                f"{self.kind} {name!r} is registered twice: by plugin {first!r} and by plugin {plugin!r}"
            )
        self._entries[name] = Entry(name, value, plugin, plugin_version)

    def remove_plugin(self, plugin: str) -> list[str]:
        """Drop every entry a plugin made (it turned out faulty); returns their names."""
        names = [name for name, entry in self._entries.items() if entry.plugin == plugin]
        for name in names:
            del self._entries[name]
        return names

    def get(self, name: str) -> T:
        return self.entry(name).value

    def entry(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            raise unknown_name(self.kind, name, self._entries) from None

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._entries if fnmatch.fnmatchcase(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def __len__(self) -> int:
        return len(self._entries)
