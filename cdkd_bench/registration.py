"""The typed ``register`` objects the registration hooks receive, so plugin modules type-check.

A hook implementation annotates its argument with one of these (as tox's hooks take a typed
parser), and mypy checks every ``register(...)`` call in it::

    from cdkd_bench import RegisterMethods, hookimpl

    @hookimpl
    def cdkd_register_methods(register: RegisterMethods) -> None:
        register(MyMethod)

Torch-free at run time: the method type is named for the type checker only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from cdkd_bench.declarations import Domain, Executor, Selector, Suite

if TYPE_CHECKING:
    from cdkd_bench.api import Method


class RegisterDomains(Protocol):
    """What ``cdkd_register_domains`` gets: call it once per :class:`~cdkd_bench.Domain`."""

    def __call__(self, domain: Domain, /) -> None: ...


class RegisterSuites(Protocol):
    """What ``cdkd_register_suites`` gets: call it once per :class:`~cdkd_bench.Suite`."""

    def __call__(self, suite: Suite, /) -> None: ...


class RegisterMethods(Protocol):
    """What ``cdkd_register_methods`` gets: call it once per :class:`~cdkd_bench.Method` subclass (the class, not an instance)."""

    def __call__(self, method: type[Method], /) -> None: ...


class RegisterExecutors(Protocol):
    """What ``cdkd_register_executors`` gets: call it once per :class:`~cdkd_bench.Executor` subclass."""

    def __call__(self, executor: type[Executor], /) -> None: ...


class RegisterSelectors(Protocol):
    """What ``cdkd_register_selectors`` gets: call it once per :class:`~cdkd_bench.Selector`."""

    def __call__(self, selector: Selector, /) -> None: ...
