"""Commands that train nothing start without torch: the plugin index tells them which plugins to skip.

Every command here runs in a fresh Python process with its own cache folder, as a user's
would, and reports which heavy modules it ended up importing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_leaderboard import fill_store

from cdkd_bench import hookspecs
from cdkd_bench.leaderboard import write_leaderboard
from cdkd_bench.plugin_index import FAMILY_OF_HOOK, INDEX_FILE
from cdkd_bench.store import Store

HEAVY = ("torch", "torchvision", "timm")
PROBE = f"""
import json, sys
from cdkd_bench.cli import main
try:
    status = main(sys.argv[2:])
except SystemExit as exit_:  # --help leaves through argparse
    status = exit_.code
heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)
with open(sys.argv[1], "w") as report:
    json.dump({{"status": status, "imported": heavy}}, report)
"""


@dataclass(frozen=True)
class Outcome:
    status: int
    imported: list[str]
    out: str
    err: str


def cdkd(argv: list[str], cache: Path, cwd: Path, env: dict[str, str] | None = None) -> Outcome:
    """``cdkd-bench ARGV`` in a new process whose cache folder is ``cache``."""
    report = cwd / "probe-report.json"
    report.unlink(missing_ok=True)
    environment = {**os.environ, "CDKD_BENCH_CACHE": str(cache), **(env or {})}
    environment.pop("CDKD_BENCH_DISABLE_PLUGINS", None)
    proc = subprocess.run([sys.executable, "-c", PROBE, str(report), *argv], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=900)
    assert report.exists(), f"cdkd-bench {' '.join(argv)} crashed:\n{proc.stderr}"
    data = json.loads(report.read_text())
    return Outcome(data["status"], data["imported"], proc.stdout, proc.stderr)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("startup")


@pytest.fixture(scope="module")
def fresh_cache(workdir: Path) -> Path:
    """A cache folder no command has used yet: the first plugin-loading command builds the index."""
    return workdir / "cache"


@pytest.fixture(scope="module")
def store(workdir: Path, host) -> Path:
    path = workdir / "results.sqlite"
    fill_store(host, path)
    return path


@pytest.fixture(scope="module")
def built_index(fresh_cache: Path, workdir: Path) -> Path:
    """The plugin index of the installed plugins, as the first command of a fresh install leaves it."""
    index = fresh_cache / INDEX_FILE
    if not index.exists():
        assert cdkd(["plugins"], fresh_cache, workdir).status == 0
    assert index.exists()
    return index


def on_path(site: Path) -> str:
    """PYTHONPATH with ``site`` first, where the test installed its plugins."""
    return os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))


def seeded_cache(folder: Path, built_index: Path) -> Path:
    """A new cache folder holding a copy of the built index (so a test need not build it again)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(built_index, folder / INDEX_FILE)
    return folder


LIGHT = {
    "help": ["--help"],
    "plugins": ["plugins"],
    "list-suites": ["list", "suites"],
    "list-tasks": ["list", "tasks"],
    "leaderboard": ["leaderboard", "--store", "results.sqlite", "--out-dir", "boards"],
}


@pytest.mark.parametrize("argv", list(LIGHT.values()), ids=list(LIGHT))
def test_a_light_command_does_not_import_torch_once_the_index_exists(argv: list[str], fresh_cache: Path, workdir: Path, store: Path) -> None:
    first = cdkd(argv, fresh_cache, workdir)  # may build the index, importing every plugin
    second = cdkd(argv, fresh_cache, workdir)
    assert (first.status, second.status) == (0, 0), first.err + second.err
    assert second.imported == []
    assert (second.out, second.err) == (first.out, first.err)  # the index changes nothing that is printed
    if argv == ["--help"]:
        assert first.imported == [] and "leaderboard" in first.out


def test_the_leaderboard_from_the_index_is_the_leaderboard_of_every_plugin(workdir: Path, store: Path, built_index: Path, host) -> None:
    light = cdkd(["leaderboard", "--store", str(store), "--out-dir", "boards"], built_index.parent, workdir)
    assert light.status == 0 and light.imported == []
    _, full = write_leaderboard(Store(store, read_only=True), "embedded", workdir / "full-boards", host)
    assert light.out.strip() == full.strip()
    # Row kinds come from the methods' traits, which the light command read from the index.
    assert "source_only (student on source only)" in light.out and "target_oracle (upper bound" in light.out


def test_run_and_list_methods_still_load_every_plugin(cache_dir: Path, built_index: Path) -> None:
    seeded_cache(cache_dir, built_index)
    methods = cdkd(["list", "methods"], cache_dir, cache_dir.parent)
    assert methods.status == 0 and "[kd 0.1.0]" in methods.out and "[target_oracle 0.1.0]" in methods.out
    run = cdkd(["run", "--budget", "smoke", "--tasks", "textured_to_handwritten", "--seeds", "0", "--recipes", "kd",
                "--no-progress", "--store", "r.sqlite"], cache_dir, cache_dir.parent)
    assert run.status == 0, run.err
    assert "grid: 3 done, 0 failed" in run.err
    board = cdkd(["leaderboard", "--store", "r.sqlite"], cache_dir, cache_dir.parent)
    assert board.status == 0 and board.imported == []
    assert board.out == run.out


SELECTOR_PLUGIN = """
import os
import cdkd_bench

with open(os.environ["IMPORT_LOG"], "a") as log:
    log.write("imported\\n")

@cdkd_bench.hookimpl
def cdkd_register_selectors(register):
    register(cdkd_bench.Selector("first_v1", lambda history: 0, description="the first checkpoint"))
"""


def test_an_edited_or_upgraded_plugin_is_imported_again(plugins, tmp_path: Path, built_index: Path) -> None:
    plugins.install("cdkd_first_checkpoint", SELECTOR_PLUGIN)
    cache = seeded_cache(tmp_path / "cache", built_index)
    log = tmp_path / "imports.log"
    env = {"PYTHONPATH": on_path(plugins.site), "IMPORT_LOG": str(log)}

    def list_suites_and_count_imports() -> int:
        outcome = cdkd(["list", "suites"], cache, tmp_path, env)
        assert outcome.status == 0 and "embedded" in outcome.out and outcome.err == ""
        return len(log.read_text().splitlines()) if log.exists() else 0

    assert list_suites_and_count_imports() == 1  # unknown to the index: imported, then recorded
    assert list_suites_and_count_imports() == 1  # provides no suite: skipped

    module = plugins.site / "cdkd_first_checkpoint.py"
    before = module.stat().st_mtime_ns
    module.write_text(SELECTOR_PLUGIN.replace("first_v1", "first_v2"))  # same size: only the time tells
    os.utime(module, ns=(before + 10**9, before + 10**9))
    assert list_suites_and_count_imports() == 2
    assert list_suites_and_count_imports() == 2
    assert "first_v2" in (cache / INDEX_FILE).read_text()

    edited = module.stat().st_mtime_ns
    shutil.rmtree(plugins.site / "cdkd_first_checkpoint-1.2.3.dist-info")
    plugins.install("cdkd_first_checkpoint", SELECTOR_PLUGIN.replace("first_v1", "first_v2"), version="1.3.0")
    os.utime(module, ns=(edited, edited))  # the same file as before: only the distribution's version changed
    assert list_suites_and_count_imports() == 3
    assert list_suites_and_count_imports() == 3


DUPLICATE_RULE_PLUGIN = """
import cdkd_bench

@cdkd_bench.hookimpl
def cdkd_register_selectors(register):
    register(cdkd_bench.Selector("last", lambda history: 0))
"""


def test_a_plugin_that_fails_is_tried_again_every_time_and_reported_as_with_every_plugin(plugins, tmp_path: Path, built_index: Path) -> None:
    plugins.install("cdkd_second_last", DUPLICATE_RULE_PLUGIN)
    cache = seeded_cache(tmp_path / "cache", built_index)
    env = {"PYTHONPATH": on_path(plugins.site)}
    warning = ("plugin 'cdkd_second_last' (distribution cdkd_second_last 1.2.3) failed to load and was skipped: "
               "selection rule 'last' is already registered by plugin 'last' (distribution cdkd-bench 0.1.0)")
    for _ in range(2):
        # `last` itself is not imported (it provides no suite), yet its name still counts.
        light = cdkd(["list", "suites"], cache, tmp_path, env)
        assert light.status == 0 and light.imported == []
        assert warning in light.err
    full = cdkd(["list", "methods"], cache, tmp_path, env)
    assert [line for line in full.err.splitlines() if "cdkd_second_last" in line] == [f"cdkd-bench: warning: {warning}"]


def _not_json(index: Path) -> None:
    index.write_bytes(b"\x00\xff{ not json")


def _an_entry_of_the_wrong_shape(index: Path) -> None:
    data = json.loads(index.read_text())
    data["plugins"]["kd"]["families"] = "method"
    data["plugins"]["last"]["names"] = 5
    index.write_text(json.dumps(data))


@pytest.mark.parametrize("corrupt", [_not_json, _an_entry_of_the_wrong_shape])
def test_a_corrupt_index_is_ignored_and_rewritten(corrupt, tmp_path: Path, built_index: Path) -> None:
    cache = seeded_cache(tmp_path / "cache", built_index)
    corrupt(cache / INDEX_FILE)
    expected = cdkd(["list", "suites"], seeded_cache(tmp_path / "intact", built_index), tmp_path)
    outcome = cdkd(["list", "suites"], cache, tmp_path)
    assert (outcome.status, outcome.out, outcome.err) == (0, expected.out, expected.err)
    assert json.loads((cache / INDEX_FILE).read_text()) == json.loads(built_index.read_text())
    assert cdkd(["list", "suites"], cache, tmp_path).imported == []


def _cache_under_a_file(tmp_path: Path) -> Path:
    (tmp_path / "afile").write_text("x")
    return tmp_path / "afile" / "cache"


def _index_is_a_folder(tmp_path: Path) -> Path:
    (tmp_path / "cache" / INDEX_FILE).mkdir(parents=True)
    return tmp_path / "cache"


@pytest.mark.parametrize("unusable", [_cache_under_a_file, _index_is_a_folder])
def test_a_cache_folder_that_cannot_hold_the_index_does_not_break_a_command(
    unusable, tmp_path: Path, built_index: Path, store: Path,
) -> None:
    cache = unusable(tmp_path)
    expected = cdkd(["leaderboard", "--store", str(store), "--out-dir", "boards"], built_index.parent, tmp_path)
    outcome = cdkd(["leaderboard", "--store", str(store), "--out-dir", "boards"], cache, tmp_path)
    assert (outcome.status, outcome.out, outcome.err) == (0, expected.out, expected.err)


def test_every_hook_belongs_to_a_plugin_family() -> None:
    # A hook without a family would make its plugins invisible to every narrowed load.
    assert set(FAMILY_OF_HOOK) == {name for name in dir(hookspecs) if name.startswith("cdkd_")}
