from __future__ import annotations

import importlib
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from cdkd_bench.data import load_domain
from cdkd_bench.plugins import Host, load_host

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Tests never write the user's cache folder (loading plugins records the plugin index there).

    The ``cache_dir`` fixture and tests that set CDKD_BENCH_CACHE themselves override it.
    """
    folder = tmp_path_factory.mktemp("user-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CDKD_BENCH_CACHE", str(folder))
        yield folder


@pytest.fixture(scope="session")
def host() -> Host:
    return load_host()


@pytest.fixture(scope="session")
def session_data(tmp_path_factory: pytest.TempPathFactory, host: Host) -> Path:
    """The embedded domains, generated once per test session and shared read-only."""
    cache = tmp_path_factory.mktemp("session-cache")
    suite = host.suites.get("embedded")
    for name in suite.domains:
        load_domain(host.domains.get(name), suite.image_size, cache, None)
    return cache / "data"


@pytest.fixture
def cache_dir(tmp_path: Path, session_data: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh cache (no teachers) whose data folder points at the session's generated data."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "data").symlink_to(session_data, target_is_directory=True)
    monkeypatch.setenv("CDKD_BENCH_CACHE", str(cache))
    monkeypatch.chdir(tmp_path)
    return cache


class PluginInstaller:
    """Installs a plugin the way a third-party package does: a module plus dist-info entry points."""

    def __init__(self, site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.site = site
        self.monkeypatch = monkeypatch
        site.mkdir(exist_ok=True)
        monkeypatch.syspath_prepend(str(site))

    def install(self, module: str, source: str, entry_point: str | None = None, version: str = "1.2.3") -> None:
        (self.site / f"{module}.py").write_text(textwrap.dedent(source))
        dist = self.site / f"{module}-{version}.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: {version}\n")
        (dist / "entry_points.txt").write_text(f"[cdkd_bench]\n{entry_point or module} = {module}\n")
        importlib.invalidate_caches()


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PluginInstaller:
    return PluginInstaller(tmp_path / "site", monkeypatch)
