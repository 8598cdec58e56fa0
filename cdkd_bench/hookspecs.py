"""Every hook a cdkd-bench plugin can implement.

Registration hooks receive a ``register`` callable; the host validates each call and
records which plugin made it. Per-step training behaviour is not a hook: it lives in
:class:`cdkd_bench.Method` objects.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import pluggy

from cdkd_bench.declarations import Domain, Executor, Selector, Suite

if TYPE_CHECKING:  # annotations only: the plugin manager must not need torch to know the hooks
    from torch import nn

    from cdkd_bench.api import Method

PROJECT = "cdkd_bench"
hookspec = pluggy.HookspecMarker(PROJECT)


@hookspec
def cdkd_register_domains(register: Callable[[Domain], None]) -> None:
    """Register datasets.

    :param register: call once per :class:`cdkd_bench.Domain`.

    .. versionadded:: 0.1
    """


@hookspec
def cdkd_register_suites(register: Callable[[Suite], None]) -> None:
    """Register suites: their domains, tasks, image size, budgets and defaults.

    :param register: call once per :class:`cdkd_bench.Suite`.

    .. versionadded:: 0.1
    """


@hookspec
def cdkd_register_methods(register: Callable[[type[Method]], None]) -> None:
    """Register method components.

    :param register: call once per subclass of :class:`cdkd_bench.Method`.

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
def cdkd_register_executors(register: Callable[[type[Executor]], None]) -> None:
    """Register executors that run a grid's jobs (in process, on a cluster, …).

    :param register: call once per subclass of :class:`cdkd_bench.Executor`.

    .. versionadded:: 0.1
    """


@hookspec
def cdkd_register_selectors(register: Callable[[Selector], None]) -> None:
    """Register model-selection rules.

    :param register: call once per :class:`cdkd_bench.Selector`.

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
