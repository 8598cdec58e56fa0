"""Results bundles: exported byte for byte the same, checked on reading, merged only when comparable, and verified by re-running."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from cdkd_bench.bundle_commands import sample_runs
from cdkd_bench.bundles import MANIFEST_FILE, RUNS_FILE, bundle_files, export_bundle, open_results, read_input
from cdkd_bench.cli import main
from cdkd_bench.engine import EngineSettings
from cdkd_bench.errors import UserError
from cdkd_bench.grid import GridRequest, expand, run_grid
from cdkd_bench.spec import PROTOCOL_VERSION
from cdkd_bench.store import Store, StoredRun

TASK = "printed_to_handwritten"


@pytest.fixture(scope="module")
def grid(host, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A real smoke grid (kd and the reference rows, one seed) in a store, plus one failed run; and its cache."""
    folder = tmp_path_factory.mktemp("bundles")
    cache = folder / "cache"
    specs = expand(host, GridRequest(tasks=(TASK,), recipes=("kd",), seeds=(0,), budget="smoke", device="cpu", threads=1), cache)
    store = Store(folder / "grid.sqlite")
    summary = run_grid(host, specs, store, EngineSettings(cache_dir=cache, device="cpu", threads=1, workers=1),
                       show_progress=False, log=lambda _: None)
    assert summary.done == len(specs) == 3
    broken = dataclasses.replace(specs[0], seed=7, teacher=dataclasses.replace(specs[0].teacher, seed=7))
    store.record(broken, {"status": "failed", "error": "RuntimeError: out of memory"})
    return folder / "grid.sqlite", cache


def _record(path: Path, runs: list[StoredRun]) -> Path:
    store = Store(path)
    for run in runs:
        store.record(run.spec, {"status": run.status, "metrics": run.metrics, "timings": run.timings,
                                "provenance": run.provenance, "error": run.error})
    return path


def _changed(run: StoredRun, **changes) -> StoredRun:
    """The run as if its spec had these fields (its id follows its spec, as a store's does)."""
    teacher = {k[len("teacher_"):]: changes.pop(k) for k in list(changes) if k.startswith("teacher_")}
    spec = dataclasses.replace(run.spec, teacher=dataclasses.replace(run.spec.teacher, **teacher), **changes)
    return dataclasses.replace(run, spec=spec, run_id=spec.run_id)


def _write(folder: Path, runs: list[StoredRun]) -> Path:
    folder.mkdir()
    for name, data in bundle_files(runs).items():
        (folder / name).write_bytes(data)
    return folder


def _one_sentence(exc: pytest.ExceptionInfo[UserError]) -> str:
    message = str(exc.value)
    assert "\n" not in message and ". " not in message, message
    return message


def _comparable(runs: list[StoredRun]) -> list[tuple]:
    return [(r.run_id, r.status, r.spec, r.metrics, r.timings, r.provenance, r.error) for r in runs]


def test_export_is_byte_identical_and_reads_back_as_the_store(grid, tmp_path: Path) -> None:
    store = Store(grid[0], read_only=True)
    first = export_bundle(store, tmp_path / "one")
    export_bundle(store, tmp_path / "two")
    for name in (RUNS_FILE, MANIFEST_FILE):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    assert first["runs"] == {"done": 3, "failed": 1} and list(first["suites"]) == ["embedded"]
    embedded = first["suites"]["embedded"]
    assert embedded["methods"] == {"kd": [1], "source_only": [1], "target_oracle": [1]}
    assert [p["budget"] for p in embedded["protocols"]] == ["smoke"]
    assert embedded["protocols"][0]["protocol_version"] == first["protocol_version"] == PROTOCOL_VERSION
    assert set(embedded["domains"]) == {"embedded.printed", "embedded.handwritten"}

    for source in (tmp_path / "one", tmp_path / "one" / MANIFEST_FILE):
        results = open_results([source])
        assert results.suites() == store.suites()
        for status in ("done", "failed", None):
            assert results.runs(status=status) == store.runs(status=status)
        assert results.runs(suite="embedded", status=None) == store.runs(suite="embedded", status=None)
        assert results.runs(suite="other") == []


def test_export_refuses_a_folder_in_use_and_writes_nothing(grid, tmp_path: Path, capsys) -> None:
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "notes.txt").write_text("mine")
    assert main(["export", "--store", str(grid[0]), "--out", str(tmp_path / "used")]) == 2
    assert "already exists and is not empty" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "used").iterdir()] == ["notes.txt"]
    assert main(["export", "--store", str(grid[0]), "--suite", "digits", "--out", str(tmp_path / "new")]) == 2
    assert "holds no runs of suite 'digits' (it holds: embedded)" in capsys.readouterr().err
    assert not (tmp_path / "new").exists() and [p.name for p in tmp_path.iterdir()] == ["used"]  # no temporary folder left
    (tmp_path / "empty").mkdir()
    assert main(["export", "--store", str(grid[0]), "--suite", "embedded", "--out", str(tmp_path / "empty")]) == 0
    assert sorted(p.name for p in (tmp_path / "empty").iterdir()) == [MANIFEST_FILE, RUNS_FILE]


def test_a_changed_bundle_is_refused(grid, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    export_bundle(Store(grid[0], read_only=True), bundle)
    runs_file, manifest_file = bundle / RUNS_FILE, bundle / MANIFEST_FILE
    original_runs, original_manifest = runs_file.read_bytes(), manifest_file.read_text()

    runs_file.write_bytes(original_runs.replace(b'"target_test.acc":', b'"target_test.acc":1', 1))
    with pytest.raises(UserError) as exc:
        open_results([bundle])
    assert _one_sentence(exc) == f"{str(runs_file)!r} does not match the content_sha256 of its manifest: it was changed after export"

    runs_file.write_bytes(original_runs)
    manifest = json.loads(original_manifest)
    manifest_file.write_text(json.dumps({**manifest, "format_version": 2}))
    with pytest.raises(UserError) as exc:
        open_results([bundle])
    assert "has bundle format version 2 and this cdkd-bench reads version 1; upgrade cdkd-bench" in _one_sentence(exc)

    manifest["suites"]["embedded"]["methods"]["kd"] = [2]
    manifest_file.write_text(json.dumps(manifest))
    with pytest.raises(UserError) as exc:
        open_results([bundle])
    assert _one_sentence(exc) == f"{str(manifest_file)!r} does not describe the runs of its {RUNS_FILE}; export the bundle again"


def test_two_stores_holding_halves_merge_into_what_one_store_holding_both_holds(grid, tmp_path: Path) -> None:
    runs = Store(grid[0], read_only=True).runs(status=None)
    failed = next(r for r in runs if r.status == "failed")
    done = [r for r in runs if r.status == "done"]
    retried = dataclasses.replace(failed, status="done", error=None, metrics={"target_test.acc": 50.0})
    # One half also holds the other's first run, and the failed run that the other half holds done.
    first = _record(tmp_path / "a.sqlite", [*done[:2], failed])
    second = _record(tmp_path / "b.sqlite", done[1:] + [retried])
    both = _record(tmp_path / "both.sqlite", [*done, retried])
    export_bundle(Store(second, read_only=True), tmp_path / "b-bundle")

    expected = _comparable(Store(both, read_only=True).runs(status=None))
    assert _comparable(open_results([first, second]).runs(status=None)) == expected
    assert _comparable(open_results([first, tmp_path / "b-bundle"]).runs(status=None)) == expected
    merged = open_results([first, second])
    assert merged.inputs == [str(first), str(second)] and merged.suites() == ["embedded"]


@pytest.mark.parametrize("changes, mismatch", [
    ({"target_data": "0123456789abcdef"}, "domain 'embedded.handwritten' is version {version} with data content hash {hash} in {a} "
                                          "but version {version} with data content hash 0123456789abcdef in {b}, so their runs saw "
                                          "other images"),
    ({"target_version": 9}, "domain 'embedded.handwritten' is version {version} with data content hash {hash} in {a} but version 9"),
    ({"steps": 99}, "budget 'smoke' has other numbers (student.steps is 10 in {a} but 99 in {b})"),
    ({"teacher_lr": 0.5}, "budget 'smoke' has other numbers (teacher.lr is 0.01 in {a} but 0.5 in {b})"),
    ({"method_versions": {"kd": 2}}, "method component 'kd' is version 1 in {a} but version 2 in {b}"),
    ({"protocol": 3, "teacher_protocol": 3}, "its runs in {a} are of protocol version {protocol} but in {b} of protocol version 3"),
])
def test_each_incompatibility_is_refused_in_one_sentence_naming_both_inputs(grid, tmp_path: Path, changes, mismatch) -> None:
    done = Store(grid[0], read_only=True).runs()
    kd = next(r for r in done if r.spec.recipe == "kd")
    others = _write(tmp_path / "other", [_changed(kd, **changes)])
    with pytest.raises(UserError) as exc:
        open_results([grid[0], others])
    a, b = repr(str(grid[0])), repr(str(others))
    expected = mismatch.format(a=a, b=b, hash=kd.spec.target_data, protocol=PROTOCOL_VERSION,
                               version=kd.spec.target_version)
    assert _one_sentence(exc).startswith(f"{a} and {b} cannot be merged: in suite 'embedded', {expected}")


def test_a_result_must_match_the_installed_method_and_copies_of_a_run_must_agree(grid, host, tmp_path: Path) -> None:
    kd = next(r for r in Store(grid[0], read_only=True).runs() if r.spec.recipe == "kd")
    newer = _write(tmp_path / "newer", [_changed(kd, method_versions={"kd": 7})])
    assert len(open_results([newer]).runs()) == 1  # without the plugins, results are read as recorded
    with pytest.raises(UserError) as exc:
        open_results([newer], host)
    assert _one_sentence(exc).startswith(f"{str(newer)!r} holds results of method component 'kd' version 7 (suite 'embedded'), "
                                         "but the installed kd is version 1")
    absent = _write(tmp_path / "absent", [_changed(kd, recipe="kd+nowhere", method_versions={"kd": 1, "nowhere": 3})])
    assert len(open_results([absent], host).runs()) == 1  # a component not installed here is allowed

    other = _write(tmp_path / "other", [dataclasses.replace(kd, metrics={**kd.metrics, "target_test.acc": 1.0})])
    with pytest.raises(UserError) as exc:
        open_results([grid[0], other])
    assert _one_sentence(exc).startswith(f"run {kd.run_id} is done in both {str(grid[0])!r} and {str(other)!r} but with "
                                         "different metrics")


@pytest.mark.parametrize("argv, message", [
    (["verify", "missing"], "'missing' does not exist; give a results store (SQLite file) or a results bundle folder"),
    (["verify", "notes.txt"], "'notes.txt' is neither a results store (SQLite file) nor a results bundle"),
    (["verify", "folder"], "the folder 'folder' is not a results bundle (it has no manifest.json)"),
    (["verify", "bundle", "--sample", "0"], "--sample must be at least 1, got 0"),
    (["verify", "bundle", "--sample", "4"], "--sample 4 is more than the 3 finished runs of 'bundle'; give at most 3"),
    (["verify", "bundle", "--tolerance", "-1"], "--tolerance must be a number of points, 0 or more, got -1"),
    (["export", "--store", "missing.sqlite", "--out", "out"], "results store 'missing.sqlite' does not exist"),
    (["export", "--store", "notes.txt", "--out", "out"], "results store 'notes.txt' is not a cdkd-bench SQLite store"),
])
def test_bad_input_is_one_sentence_and_writes_nothing(grid, tmp_path: Path, monkeypatch, capsys, argv, message) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("not results\n")
    (tmp_path / "folder").mkdir()
    export_bundle(Store(grid[0], read_only=True), tmp_path / "bundle")
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(argv) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("cdkd-bench: error: ") and message in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_verify_reproduces_a_sample_and_reports_a_changed_metric(grid, tmp_path: Path, capsys, monkeypatch) -> None:
    store, cache = grid
    export_bundle(Store(store, read_only=True), tmp_path / "bundle")
    flags = ["--cache-dir", str(cache), "--no-progress"]
    assert main(["verify", str(tmp_path / "bundle"), "--sample", "2", *flags]) == 0
    out = capsys.readouterr().out
    assert out.count("  reproduced\n") == 2 and "+0.00" in out
    assert out.strip().endswith("verify: 2 of 2 sampled runs reproduce within 0.5 points of target accuracy")

    runs = read_input(tmp_path / "bundle")
    [picked] = sample_runs(runs, 1, 0, "bundle")  # the run `--sample 1 --seed 0` re-runs
    last = picked.metrics["checkpoints"][-1]
    changed = {**picked.metrics, "checkpoints": [*picked.metrics["checkpoints"][:-1], {**last, "target_test.acc": last["target_test.acc"] + 5}]}
    _write(tmp_path / "changed", [dataclasses.replace(r, metrics=changed) if r is picked else r for r in runs])
    assert main(["verify", str(tmp_path / "changed"), "--sample", "1", "--seed", "0", *flags]) == 1
    out = capsys.readouterr().out
    assert f"run {picked.run_id}: embedded.{TASK}, {picked.spec.recipe}, seed 0, budget smoke" in out
    assert f"NOT reproduced: at step {last['step']} it differs by -5.00 points (tolerance 0.5)" in out
    assert "verify: 0 of 1 sampled runs reproduce" in out

    on_cuda = _changed(picked, numerics="cuda bf16-autocast", teacher_numerics="cuda bf16-autocast")
    _write(tmp_path / "cuda", [on_cuda])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["verify", str(tmp_path / "cuda"), "--sample", "1", *flags]) == 1
    out = capsys.readouterr().out
    assert "NOT verified: it was computed on CUDA ('cuda bf16-autocast') and this machine has no CUDA device" in out
    assert out.strip().endswith("; 1 could not be re-run here")
