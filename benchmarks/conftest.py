"""Shared pieces of the benchmarks (``tox -e bench``): a private cache, the ``bench_only`` marker, alternated rounds."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

WARMUP_ROUNDS = 1


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "bench_only: runs only with --benchmark-enable, as `tox -e bench` gives it")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The project's addopts say --benchmark-disable; only an explicit --benchmark-enable (tox -e bench) runs these.
    if config.getoption("benchmark_enable", default=False):
        return
    skip = pytest.mark.skip(reason="a long benchmark: run it with `tox -e bench` (--benchmark-enable)")
    for item in items:
        if item.get_closest_marker("bench_only"):
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Loading plugins records the plugin index in the cache folder: keep the user's out of it."""
    folder = tmp_path_factory.mktemp("user-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CDKD_BENCH_CACHE", str(folder))
        yield folder


@dataclass
class Comparison:
    """Seconds per round of two ways of doing the same work, measured alternately, and each side's last result."""

    baseline_name: str
    measured_name: str
    baseline_s: list[float]
    measured_s: list[float]
    baseline_result: Any
    measured_result: Any

    @property
    def ratio(self) -> float:
        return statistics.median(self.measured_s) / statistics.median(self.baseline_s)

    def report(self, benchmark: Any, label: str) -> None:
        """Medians, spreads and the ratio into the benchmark's extra_info, and one printed line (shown with -s)."""
        parts = []
        for name, times in ((self.baseline_name, self.baseline_s), (self.measured_name, self.measured_s)):
            median = statistics.median(times)
            benchmark.extra_info.update({f"{name}_median_s": median, f"{name}_min_s": min(times), f"{name}_max_s": max(times)})
            parts.append(f"{name} {median:.3f} s ({min(times):.3f}–{max(times):.3f})")
        benchmark.extra_info["rounds"] = len(self.measured_s)
        benchmark.extra_info[f"ratio_{self.measured_name}_over_{self.baseline_name}"] = self.ratio
        print(f"\n{label}: median of {len(self.measured_s)} alternated rounds: {', '.join(parts)}; "
              f"{self.measured_name}/{self.baseline_name} = {self.ratio:.3f}")


def _timed(work: Callable[[Any], Any], subject: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = work(subject)
    return time.perf_counter() - started, result


@pytest.fixture
def alternate(benchmark: Any) -> Callable[..., Comparison]:
    """Run a baseline and a measured side in turn (baseline, measured, baseline, …) and compare their medians.

    Machine noise comes in waves; alternating rounds makes it hit both sides alike, so their
    ratio means something even when the absolute times drift. pytest-benchmark times the
    measured side (its table row); its ``setup`` hook, which it calls untimed before every
    round, runs the baseline round just before, timed here. ``prepare()`` makes each round's
    fresh input (a new model, a new folder), outside the timed part.
    """

    def run(prepare: Callable[[], Any], baseline: Callable[[Any], Any], measured: Callable[[Any], Any], *,
            names: tuple[str, str], rounds: int) -> Comparison:
        baseline_s: list[tuple[float, Any]] = []
        measured_s: list[tuple[float, Any]] = []

        def baseline_round_then_prepare() -> tuple[tuple[Any], dict[str, Any]]:
            baseline_s.append(_timed(baseline, prepare()))
            return (prepare(),), {}

        def measured_round(subject: Any) -> None:
            measured_s.append(_timed(measured, subject))

        benchmark.pedantic(measured_round, setup=baseline_round_then_prepare, rounds=rounds, warmup_rounds=WARMUP_ROUNDS)
        # The warm-up rounds come first; with --benchmark-disable pytest-benchmark runs a single round and no warm-up.
        baseline_s, measured_s = baseline_s[-rounds:], measured_s[-rounds:]
        return Comparison(names[0], names[1], [t for t, _ in baseline_s], [t for t, _ in measured_s],
                          baseline_s[-1][1], measured_s[-1][1])

    return run
