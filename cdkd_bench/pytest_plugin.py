"""pytest fixtures for cdkd-bench plugin authors, loaded by pytest itself (the ``pytest11`` entry point).

Installed with cdkd-bench, so every test can ask for them::

    def test_my_method_runs_in_a_real_grid(cdkd_tiny_suite):
        outcome = cdkd_tiny_suite.run(["my_method"], plugins=[my_plugin])
        assert outcome.summary.failed == 0

    def test_my_loss_on_both_kinds_of_pair(cdkd_pair, cdkd_step):
        terms = cdkd_step(MyMethod, pair=cdkd_pair).loss()

Fixtures: ``cdkd_cache`` (a private cache folder), ``cdkd_host`` (a host with your plugins),
``cdkd_tiny_suite`` (a tiny generated suite to run real grids on), ``cdkd_pair`` (tiny
homogeneous and heterogeneous teacher/student pairs) and ``cdkd_step`` (one training step for
a component). Every pytest run in an environment with cdkd-bench loads this module, so it
imports neither torch nor the engine: the fixtures import them when a test uses them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from cdkd_bench.api import Method
    from cdkd_bench.conformance import KitPair, KitStep, KitSuite
    from cdkd_bench.plugins import Host


@pytest.fixture
def cdkd_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh cdkd-bench cache folder for this test, set as ``CDKD_BENCH_CACHE`` while it runs.

    Loading plugins records the plugin index in the cache folder and grids keep data and
    teachers there; with this fixture (which ``cdkd_host`` and ``cdkd_tiny_suite`` use) a test
    never writes the user's cache.
    """
    folder = tmp_path_factory.mktemp("cdkd-cache")
    monkeypatch.setenv("CDKD_BENCH_CACHE", str(folder))
    return folder


@pytest.fixture
def cdkd_host(cdkd_cache: Path) -> Callable[..., Host]:
    """A factory: ``cdkd_host(*plugins, strict=True)`` returns a ``Host`` with the installed plugins plus ``plugins``.

    Each plugin is a module or an object with ``@cdkd_bench.hookimpl`` methods (named after
    its module or class), or a ``(name, plugin)`` pair. With ``strict`` (the default) a given
    plugin that the host refuses (an invalid registration, a name another plugin has) fails
    the test with the host's reason; pass ``strict=False`` to test that refusal yourself
    (``host.failed_plugins``).
    """

    def make(*plugins: object, strict: bool = True) -> Host:
        from cdkd_bench.conformance import named_plugins
        from cdkd_bench.plugins import load_host

        named = named_plugins(plugins)
        host = load_host(extra_plugins=named)
        if strict:
            given = {name for name, _ in named}
            refused = [info for info in host.failed_plugins if info.name in given]
            if refused:
                pytest.fail(f"plugin {refused[0].name!r} was refused by the host: {refused[0].error}", pytrace=False)
        return host

    return make


@pytest.fixture
def cdkd_tiny_suite(cdkd_cache: Path, tmp_path: Path) -> KitSuite:
    """A tiny generated suite registered in a host, to run real grids in seconds (``KitSuite``).

    Suite ``kit``: domains ``kit.light`` and ``kit.dark`` (generated stripes, 64 train and 32
    test images each, 2 classes, 32 px), tasks ``light_to_dark`` and ``dark_to_light``, views
    ``weak`` and ``strong``, one ``smoke`` budget (6 teacher and 4 student steps, 2 evaluation
    points) and ``resnet10_w8_32px`` as teacher and student. Attributes: ``suite``, ``domains``,
    ``plugin`` (the object registering them), ``host`` (installed plugins plus ``plugin``),
    ``folder``; ``host_with(*plugins)`` adds yours; ``run(recipes, plugins=..., tasks=...,
    seeds=..., **grid_request_fields)`` runs a grid on the CPU into this test's folder and
    returns ``KitRun`` (``summary``, ``runs`` as stored, ``log``, ``host``, ``by_recipe()``).
    """
    from cdkd_bench.conformance import kit_suite

    return kit_suite(tmp_path / "cdkd-kit")


@pytest.fixture(params=["homogeneous", "heterogeneous"])
def cdkd_pair(request: pytest.FixtureRequest) -> KitPair:
    """A tiny teacher/student pair with its ``MethodInfo``; a test using it runs once for each kind (``KitPair``).

    ``homogeneous``: three stages of the same map sizes, the teacher twice as wide (like a
    ResNet-18 teacher for a ResNet-10 student). ``heterogeneous``: every stage differs in width
    and size (as ``check_method`` uses). Attributes: ``kind``, ``student``, ``teacher`` (frozen,
    eval mode), ``info`` (the ``MethodInfo`` to build components with), ``num_classes`` (4),
    ``image_size`` (16). Pass it to ``cdkd_step(..., pair=cdkd_pair)``.
    """
    from cdkd_bench.conformance import kit_pair

    return kit_pair(str(request.param))


@pytest.fixture
def cdkd_step() -> Callable[..., KitStep]:
    """A factory: ``cdkd_step(MyMethod, hparams=None, *, pair="heterogeneous", batch=6, num_classes=4, progress=0.5, seed=0)``.

    Builds the component (default hparams unless given) on a fresh tiny pair (or the
    ``KitPair`` given, e.g. ``cdkd_pair``) and one training ``Step`` as the engine makes it: the
    intermediate stages it declares, a stand-in augmentation for each view it declares,
    per-sample indices, target labels only if it ``uses_target_labels`` and a teacher only if
    it ``needs_teacher``. Returns ``KitStep`` (``component``, ``step``, ``pair``, ``labels``;
    ``loss()`` is ``component.loss(step)``). Built on ``cdkd_bench.testing.make_step``.
    """

    def make(method: type[Method], hparams: Any = None, **options: Any) -> KitStep:
        from cdkd_bench.conformance import kit_step

        return kit_step(method, hparams, **options)

    return make
