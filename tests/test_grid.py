from __future__ import annotations

from pathlib import Path

import pytest
from helpers import Observer, TestMethods

from cdkd_bench.engine import EngineSettings
from cdkd_bench.errors import UserError
from cdkd_bench.grid import GridRequest, expand, read_grid_file, run_grid
from cdkd_bench.plugins import load_host
from cdkd_bench.store import Store


def quiet(_message: str) -> None:
    pass


# In the slow env: the default run (test_cli's end-to-end resume checks the same) must stay under 10 minutes on 2 cores.
@pytest.mark.slow
def test_a_second_run_of_the_same_grid_trains_nothing(host, cache_dir: Path) -> None:
    specs = expand(host, GridRequest(tasks=("handwritten_to_printed",), seeds=(0,), budget="smoke"))
    store = Store(cache_dir.parent / "results.sqlite")
    settings = EngineSettings(cache_dir=cache_dir, device="cpu")
    first = run_grid(host, specs, store, settings, show_progress=False, log=quiet)
    assert (first.done, first.failed, first.skipped, first.teachers_trained) == (3, 0, 0, 1)
    second = run_grid(host, specs, store, settings, show_progress=False, log=quiet)
    assert (second.done, second.failed, second.skipped, second.teachers_trained) == (0, 0, 3, 0)
    assert len(store.runs()) == 3


def test_a_failed_run_neither_stops_the_grid_nor_loses_results_and_is_retried(cache_dir: Path) -> None:
    observer = Observer()
    host = load_host(extra_plugins=[("test-methods", TestMethods()), ("observer", observer)])
    specs = expand(host, GridRequest(tasks=("handwritten_to_printed",), recipes=("broken", "kd"), seeds=(0,), budget="smoke"))
    store = Store(cache_dir.parent / "results.sqlite")
    settings = EngineSettings(cache_dir=cache_dir, device="cpu")
    summary = run_grid(host, specs, store, settings, show_progress=False, log=quiet)
    assert (summary.done, summary.failed) == (3, 1)
    failed = store.runs(status="failed")
    assert [r.spec.recipe for r in failed] == ["broken"]
    assert failed[0].error == "RuntimeError: this method is broken"
    assert sorted(r.spec.recipe for r in store.runs()) == ["kd", "source_only", "target_oracle"]
    assert sorted(observer.before) == ["broken", "kd", "source_only", "target_oracle"]
    assert ("broken", "failed") in observer.after and ("kd", "done") in observer.after
    again = run_grid(host, specs, store, settings, show_progress=False, log=quiet)
    assert (again.skipped, again.failed_before, again.done, again.failed) == (3, 1, 0, 0)  # a failed run is left alone
    retried = run_grid(host, specs, store, settings, show_progress=False, log=quiet, retry_failed=True)
    assert (retried.skipped, retried.failed) == (3, 1)  # only the failed run is tried again


def test_grid_file_accepts_flat_and_nested_hparams(tmp_path: Path) -> None:
    path = tmp_path / "grid.toml"
    path.write_text('suite = "embedded"\nseeds = [0, 1]\nrecipes = ["kd"]\n[hparams]\n"kd.weight" = 0.5\n[hparams.kd]\ntemperature = 2.0\n')
    fields = read_grid_file(path)
    assert fields == {"suite": "embedded", "seeds": (0, 1), "recipes": ("kd",), "hparams": {"kd.weight": 0.5, "kd.temperature": 2.0}}


@pytest.mark.parametrize(
    "text, message",
    [
        ('sude = "embedded"\n', "unknown key 'sude' in grid file .*did you mean .*'suite'"),
        ("seeds = 3\n", "grid file key 'seeds' must be a list of ints"),
        ('suite = "embedded\n', "is not valid TOML"),
    ],
)
def test_malformed_grid_files_get_one_sentence(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "grid.toml"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        read_grid_file(path)


def test_unknown_task_and_budget_suggest(host) -> None:
    with pytest.raises(UserError, match="unknown task of suite 'embedded' 'printed_to_handwriten'; did you mean"):
        expand(host, GridRequest(tasks=("printed_to_handwriten",)))
    with pytest.raises(UserError, match="unknown budget of suite 'embedded' 'quik'; did you mean 'quick'"):
        expand(host, GridRequest(budget="quik"))


def test_unsupported_teacher_recipe_and_regime_fail_before_training(host) -> None:
    with pytest.raises(UserError, match="teacher recipe 'kd' names 'kd', which is not an adaptation component"):
        expand(host, GridRequest(teacher_recipe="kd"))
    with pytest.raises(UserError, match="label regime 'semi' is not one of: uda, ssda-K"):
        expand(host, GridRequest(label_regime="semi"))


def test_repeated_entries_run_once_and_are_said(host, caplog: pytest.LogCaptureFixture) -> None:
    request = GridRequest(tasks=("handwritten_to_printed", "embedded.handwritten_to_printed"), recipes=("kd", "kd"),
                          seeds=(0, 0), budget="smoke")
    with caplog.at_level("WARNING", logger="cdkd_bench"):
        specs = expand(host, request)
    assert len(specs) == len({s.run_id for s in specs}) == 3
    said = [r.getMessage() for r in caplog.records]
    assert "task embedded.handwritten_to_printed is listed more than once; it runs once" in said
    assert "recipe kd is listed more than once; it runs once" in said
    assert "seed 0 is listed more than once; it runs once" in said
