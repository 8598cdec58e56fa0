"""Every hook a cdkd-bench plugin can implement.

Registration hooks receive a typed ``register`` callable (the protocols of
:mod:`cdkd_bench.registration`); the host validates each call and records which plugin
made it. Per-step training behaviour is not a hook: it lives in
:class:`cdkd_bench.Method` objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pluggy

from cdkd_bench.registration import RegisterDomains, RegisterExecutors, RegisterMethods, RegisterSelectors, RegisterSuites

if TYPE_CHECKING:  # annotations only: the plugin manager must not need torch to know the hooks
    from torch import nn

PROJECT = "cdkd_bench"
hookspec = pluggy.HookspecMarker(PROJECT)


@hookspec
def cdkd_register_domains(register: RegisterDomains) -> None:
    """Register datasets.

    :param register: the typed register object, :class:`cdkd_bench.RegisterDomains`: call it
        once per :class:`cdkd_bench.Domain`.

    .. versionadded:: 0.1
    """


@hookspec
def cdkd_register_suites(register: RegisterSuites) -> None:
    """Register suites: their domains, tasks, image size, budgets and defaults.

    :param register: the typed register object, :class:`cdkd_bench.RegisterSuites`: call it
        once per :class:`cdkd_bench.Suite`.

    .. versionadded:: 0.1
    """


@hookspec
def cdkd_register_methods(register: RegisterMethods) -> None:
    """Register method components.

    :param register: the typed register object, :class:`cdkd_bench.RegisterMethods`: call it
        once per subclass of :class:`cdkd_bench.Method` (the class, not an instance).

    .. versionadded:: 0.1
    """


@hookspec(firstresult=True)
def cdkd_resolve_architecture(name: str, num_classes: int, pretrained: bool) -> nn.Module | None:
    """Build the network called ``name``, or return None if this plugin does not know it.

    The module must offer timm's ``forward_features`` / ``forward_head(pre_logits=True)`` /
    ``get_classifier`` interface. The first non-None answer wins.

    :param name: architecture name as the user wrote it.
    :param num_classes: size of the classifier head.
    :param pretrained: load published weights; raise :class:`cdkd_bench.UserError` if
        they cannot be had.

    .. versionadded:: 0.1
    """


@hookspec
def cdkd_architecture_names() -> list[str]:
    """Names this plugin resolves, for ``cdkd-bench list archs``.

    .. versionadded:: 0.1
    """
    raise NotImplementedError  # a specification: pluggy never calls this body


@hookspec
def cdkd_register_executors(register: RegisterExecutors) -> None:
    """Register executors that run a grid's jobs (in process, on a cluster, …).

    :param register: the typed register object, :class:`cdkd_bench.RegisterExecutors`: call
        it once per subclass of :class:`cdkd_bench.Executor`.

    .. versionadded:: 0.1
    """


@hookspec
def cdkd_register_selectors(register: RegisterSelectors) -> None:
    """Register model-selection rules.

    :param register: the typed register object, :class:`cdkd_bench.RegisterSelectors`: call
        it once per :class:`cdkd_bench.Selector`.

    .. versionadded:: 0.1
    """


@hookspec
def cdkd_before_run(spec: Mapping[str, Any]) -> None:
    """Observe a run about to start (loggers, trackers).

    :param spec: the run's canonical spec, as stored.

    .. versionadded:: 0.1
    """


@hookspec
def cdkd_after_run(spec: Mapping[str, Any], result: Mapping[str, Any]) -> None:
    """Observe a finished or failed run.

    :param spec: the run's canonical spec, as stored.
    :param result: ``status``, ``metrics`` (when done), ``error`` (when failed), timings.

    .. versionadded:: 0.1
    """
