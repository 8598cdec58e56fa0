"""A corpus of user mistakes: each one sentence on stderr, exit status 2, no traceback, store untouched.

Every case runs the real command line against a store that already holds finished runs;
the store's rows must be byte-for-byte the same afterwards.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from cdkd_bench.cli import main

STORE = "results.sqlite"
RUN = ["run", "--budget", "smoke", "--tasks", "textured_to_handwritten", "--seeds", "0", "--no-progress", "--store", STORE]


def _file(name: str, content: bytes) -> Callable[[], None]:
    return lambda: Path(name).write_bytes(content)


def _folder(name: str) -> Callable[[], None]:
    return lambda: Path(name).mkdir(parents=True)


def _sqlite(name: str, sql: str) -> Callable[[], None]:
    def make() -> None:
        with sqlite3.connect(name) as db:
            db.executescript(sql)

    return make


def _grid(text: str) -> Callable[[], None]:
    return _file("grid.toml", text.encode())


def _nothing() -> None:
    pass


def run(*extra: str) -> list[str]:
    return [*RUN, *extra]


def grid(text: str) -> tuple[list[str], Callable[[], None]]:
    """Run a grid file; tasks and seeds stay small unless the file itself sets them (flags would override it)."""
    argv = ["run", "--grid", "grid.toml", "--store", STORE, "--no-progress", "--budget", "smoke"]
    argv += [] if "tasks" in text else ["--tasks", "textured_to_handwritten"]
    argv += [] if "seeds" in text else ["--seeds", "0"]
    return argv, _grid(text)


# (id, argv, setup, environment, a fragment of the one-line error)
CASES: list[tuple[str, list[str], Callable[[], None], dict[str, str], str]] = []


def case(case_id: str, argv: list[str], fragment: str, setup: Callable[[], None] = _nothing, env: dict[str, str] | None = None) -> None:
    CASES.append((case_id, argv, setup, env or {}, fragment))


# --- unknown names, with suggestions
case("suite-typo", run("--suite", "embeded"), "unknown suite 'embeded'; did you mean 'embedded'?")
case("task-typo", run("--tasks", "textured_to_handwriten"), "unknown task of suite 'embedded' 'textured_to_handwriten'; did you mean")
case("task-other-suite", run("--tasks", "office31.amazon_to_webcam"), "unknown task of suite 'embedded'")
case("method-typo", run("--recipes", "kdd"), "unknown method 'kdd'; did you mean 'kd'")
case("method-in-combo", run("--recipes", "kd+dannn"), "unknown method 'dannn'; did you mean 'dann'")
case("student-typo", run("--student", "resnet10_w8"), "unknown architecture 'resnet10_w8'; did you mean 'resnet10_w8_32px'")
case("teacher-typo", run("--teacher", "resnet18_w16"), "unknown architecture 'resnet18_w16'")
case("budget-typo", run("--budget", "quik"), "unknown budget of suite 'embedded' 'quik'; did you mean 'quick'?")
case("selection-typo", run("--selection", "lst"), "unknown selection rule 'lst'")
case("executor-typo", run("--executor", "locl"), "unknown executor 'locl'; did you mean 'local'?")
case("hparam-typo", run("--set", "kd.tempreature=2"), "unknown hparam 'kd.tempreature'; did you mean 'kd.temperature'?")
case("hparam-method-not-in-grid", run("--recipes", "kd", "--set", "dann.weight=1"), "hparam 'dann.weight' is for method 'dann', which no recipe")
case("hparam-unknown-method", run("--recipes", "kd", "--set", "dannn.weight=1"), "unknown method 'dannn'; did you mean 'dann'")
case("hparam-of-reference-only", run("--recipes", "source_only", "--set", "kd.weight=1"), "which no recipe in this grid uses")
# --- malformed assignments and recipes
case("set-no-equals", run("--set", "kd.temperature"), "--set 'kd.temperature' is malformed")
case("set-no-dot", run("--set", "temperature=2"), "--set 'temperature=2' is malformed")
case("set-empty-field", run("--set", "kd.=2"), "must be written method.hparam")
case("set-empty", run("--set", ""), "--set '' is malformed")
case("recipe-trailing-plus", run("--recipes", "kd+"), "recipe 'kd+' is malformed")
case("recipe-leading-plus", run("--recipes", "+kd"), "recipe '+kd' is malformed")
case("recipe-double-plus", run("--recipes", "kd++source_only"), "is malformed")
case("recipe-repeats-method", run("--recipes", "kd+kd"), "recipe 'kd+kd' names a method twice")
# --- explicitly empty values are errors, never silent defaults
for flag in ("--budget", "--suite", "--teacher", "--student", "--selection", "--executor", "--device", "--tasks", "--recipes"):
    case(f"empty{flag}", run(flag, ""), f"{flag} has an empty value")
    case(f"blank{flag}", run(flag, "   "), f"{flag} has an empty value")
case("tasks-only-comma", run("--tasks", ","), "--tasks has an empty value")
case("tasks-empty-item", run("--tasks", "textured_to_handwritten,,printed_to_handwritten"), "--tasks has an empty value")
case("recipes-only-comma", run("--recipes", ","), "--recipes has an empty value")
case("seeds-empty", run("--seeds", ""), "seeds must be comma-separated whole numbers")
case("seeds-only-comma", run("--seeds", ","), "seeds must be comma-separated whole numbers")
case("store-empty", run("--store", ""), "argument --store: an empty path was given")
case("cache-dir-empty", run("--cache-dir", ""), "argument --cache-dir: an empty path was given")
case("data-root-empty", run("--data-root", ""), "argument --data-root: an empty path was given")
case("out-dir-empty", run("--out-dir", ""), "argument --out-dir: an empty path was given")
case("grid-path-empty", ["run", "--grid", ""], "argument --grid: an empty path was given")
for key, value in (("tasks", "[]"), ("recipes", "[]"), ("seeds", "[]"), ("budget", '""'), ("teacher", '""'),
                   ("student", '""'), ("suite", '""'), ("store", '""'), ("selection", '" "'), ("device", '""')):
    argv, setup = grid(f"{key} = {value}\n")
    case(f"grid-empty-{key}", argv, f"grid file key '{key}'", setup)
# --- seeds and threads out of range
case("seeds-word", run("--seeds", "abc"), "seeds must be comma-separated whole numbers, got 'abc'")
case("seeds-float", run("--seeds", "1.5"), "seeds must be comma-separated whole numbers")
case("seeds-negative", run("--seeds", "-1"), "holds seed -1; seeds must be whole numbers from 0 to 4294967295")
case("seeds-huge", run("--seeds", str(2**64)), "seeds must be whole numbers from 0 to")
case("seeds-just-too-big", run("--seeds", str(2**32)), "seeds must be whole numbers from 0 to")
argv, setup = grid("seeds = [-3]\n")
case("grid-seeds-negative", argv, "grid file key 'seeds' holds seed -3", setup)
argv, setup = grid(f"seeds = [{2**64}]\n")
case("grid-seeds-overflow", argv, "grid file key 'seeds' holds seed 18446744073709551616", setup)
argv, setup = grid(f"seeds = [{2**63 - 1}]\n")
case("grid-seeds-huge", argv, "seeds must be whole numbers from 0 to", setup)
argv, setup = grid("seeds = [1.0]\n")
case("grid-seeds-float", argv, "grid file key 'seeds' must be a list of ints", setup)
argv, setup = grid("seeds = [true]\n")
case("grid-seeds-bool", argv, "grid file key 'seeds' must be a list of ints", setup)
case("threads-word", run("--threads", "abc"), "--threads must be a whole number of CPU threads, got 'abc'")
case("threads-zero", run("--threads", "0"), "--threads must be between 1 and 1024 CPU threads, got 0")
case("threads-negative", run("--threads", "-2"), "--threads must be between 1 and 1024 CPU threads")
case("threads-huge", run("--threads", "100000"), "--threads must be between 1 and 1024 CPU threads")
case("threads-env-word", run(), f"the environment variable CDKD_BENCH_THREADS must be a whole number of CPU threads, got {'abc'!r}",
     env={"CDKD_BENCH_THREADS": "abc"})
case("threads-env-zero", run(), "CDKD_BENCH_THREADS must be between 1 and 1024", env={"CDKD_BENCH_THREADS": "0"})
case("threads-env-empty", run(), "CDKD_BENCH_THREADS must be a whole number", env={"CDKD_BENCH_THREADS": ""})
argv, setup = grid("threads = 0\n")
case("grid-threads-zero", argv, "grid file key 'threads' must be a whole number from 1 to 1024", setup)
argv, setup = grid('threads = "2"\n')
case("grid-threads-string", argv, "grid file key 'threads' must be a whole number", setup)
# --- non-finite, huge and mistyped hparams
for value in ("nan", "inf", "-inf", "1e400", "-1e999"):
    case(f"temperature-{value}", run("--set", f"kd.temperature={value}"), "hparam kd.temperature must be a finite number")
case("weight-nan", run("--set", "kd.weight=NaN"), "hparam kd.weight must be a finite number")
case("temperature-word", run("--set", "kd.temperature=hot"), "hparam kd.temperature must be a float, got 'hot'")
case("temperature-blank", run("--set", "kd.temperature="), "hparam kd.temperature must be a float, got ''")
case("temperature-zero", run("--set", "kd.temperature=0"), "invalid hparam for kd: temperature must be positive")
case("temperature-negative", run("--set", "kd.temperature=-1"), "invalid hparam for kd: temperature must be positive, got -1.0")
case("weight-negative", run("--set", "kd.weight=-0.5"), "invalid hparam for kd: weight must be zero or positive")
case("variant-unknown", run("--set", "kd.variant=l2"), "invalid hparam for kd: variant must be one of kl, mse")
case("domains-unknown", run("--set", "kd.domains=all"), "invalid hparam for kd: domains must be one of")
for value in ("nan", "inf", "-inf", "1e400"):
    argv, setup = grid(f'recipes = ["kd"]\n[hparams.kd]\ntemperature = {value}\n')
    case(f"grid-temperature-{value}", argv, "hparam kd.temperature must be a finite number", setup)
argv, setup = grid('recipes = ["kd"]\n[hparams.kd]\ntemperature = "2"\n')
case("grid-temperature-string", argv, "hparam kd.temperature must be a float, got '2'", setup)
argv, setup = grid(f'recipes = ["kd"]\n[hparams.kd]\ntemperature = {"9" * 400}\n')
case("grid-temperature-huge-int", argv, "hparam kd.temperature is too large for a float", setup)
argv, setup = grid('recipes = ["kd"]\n[hparams.kd]\nvariant = 5\n')
case("grid-variant-int", argv, "hparam kd.variant must be a str, got 5", setup)
argv, setup = grid('recipes = ["kd"]\n[hparams.kd]\nweight = [1, 2]\n')
case("grid-weight-list", argv, "hparam kd.weight must be a float", setup)
argv, setup = grid('recipes = ["kd"]\nhparams = 3\n')
case("grid-hparams-not-table", argv, "grid file key 'hparams' must be a table", setup)
# --- grid files that cannot be read
case("grid-missing", ["run", "--grid", "missing.toml"], "grid file 'missing.toml' does not exist")
case("grid-is-folder", ["run", "--grid", "grids"], "grid file 'grids' is a folder, not a TOML file", _folder("grids"))
case("grid-not-utf8", ["run", "--grid", "grid.toml"], "grid file 'grid.toml' is not UTF-8 text", _file("grid.toml", b"suite = \"\xff\xfe\"\n"))
case("grid-binary", ["run", "--grid", "grid.toml"], "grid file 'grid.toml' is not", _file("grid.toml", bytes(range(256))))
case("grid-bad-toml", ["run", "--grid", "grid.toml"], "is not valid TOML", _file("grid.toml", b'suite = "embedded\n'))
case("grid-unknown-key", ["run", "--grid", "grid.toml"], "unknown key 'sude' in grid file 'grid.toml'; did you mean",
     _file("grid.toml", b'sude = "embedded"\n'))
argv, setup = grid('recipes = "kd"\n')
case("grid-recipes-string", argv, "grid file key 'recipes' must be a list of strs", setup)
argv, setup = grid("tasks = [1, 2]\n")
case("grid-tasks-ints", argv, "grid file key 'tasks' must be a list of strs", setup)
argv, setup = grid("suite = 3\n")
case("grid-suite-int", argv, "grid file key 'suite' must be a string, got 3", setup)
argv, setup = grid('teacher_recipe = "kd"\n')
case("grid-teacher-recipe", argv, "teacher recipe 'kd' names 'kd', which is not an adaptation component", setup)
argv, setup = grid('teacher_recipe = ["source", 3]\n')
case("grid-teacher-recipe-int", argv, "grid file key 'teacher_recipe' must be a list of strs", setup)
case("teacher-recipe-distillation", run("--teacher-recipe", "dann+kd"), "teacher recipe 'dann+kd' names 'kd', which is not an adaptation")
case("teacher-recipe-unknown", run("--teacher-recipe", "dannn"), "unknown method 'dannn'; did you mean 'dann'")
case("teacher-recipe-hparam-range", run("--teacher-recipe", "dann", "--set", "dann.gamma=-1"), "invalid hparam for dann")
argv, setup = grid('label_regime = "semi"\n')
case("grid-label-regime", argv, "label regime 'semi' is not one of: uda, ssda-K", setup)
case("ssda-too-many-shots", run("--label-regime", "ssda-5000"), "asks for 5000 labelled images per class")
# --- devices
for device in ("meta", "tpu", "CPU", "cuda:x", "cuda:-1", "cpu:0"):
    case(f"device-{device}", run("--device", device), f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")
case("device-cuda-absent", run("--device", "cuda"), "device 'cuda' was asked for but no CUDA device is available")
case("device-cuda1-absent", run("--device", "cuda:1"), "device 'cuda:1' was asked for but no CUDA device is available")
case("runs-per-device-on-cpu", run("--device", "cpu", "--runs-per-device", "2"), "--runs-per-device packs several runs on each GPU")
case("runs-per-device-zero", run("--runs-per-device", "0"), "--runs-per-device must be between 1 and 1024 runs per device, got 0")
case("runs-per-device-and-workers", run("--workers", "2", "--runs-per-device", "2"), "give --workers or --runs-per-device, not both")
case("ray-address-silent", run("--executor", "ray", "--seeds", "5"), "does not answer", env={"CDKD_BENCH_RAY_ADDRESS": "127.0.0.1:1"})
case("ray-address-flag-silent", run("--executor", "ray", "--ray-address", "127.0.0.1:1", "--seeds", "5"), "does not answer")
# --- line breaks and control characters in names
case("suite-newline", run("--suite", "embedded\nx"), "--suite has a line break or control character")
case("task-newline", run("--tasks", "textured\n_to_handwritten"), "--tasks has a line break or control character")
case("teacher-tab", run("--teacher", "resnet\tx"), "--teacher has a line break or control character")
case("store-newline", run("--store", "a\nb.sqlite"), "argument --store: the path 'a\\nb.sqlite' has a line break")
case("out-dir-newline", run("--out-dir", "boards\n"), "argument --out-dir: the path")
argv, setup = grid('budget = "quick\\n"\n')
case("grid-budget-newline", argv, "grid file key 'budget' has a line break or control character", setup)
# --- stores, caches and output folders that cannot be used
case("store-is-folder", run("--store", "storedir"), "results store 'storedir' is not a file", _folder("storedir"))
case("store-not-sqlite", run("--store", "notes.txt"), "results store 'notes.txt' is not a cdkd-bench SQLite store",
     _file("notes.txt", b"these are my notes, not a database\n" * 20))
case("store-foreign-sqlite", run("--store", "other.db"), "is an SQLite file of another program (no 'runs' table)",
     _sqlite("other.db", "CREATE TABLE invoices (id INTEGER);"))
case("store-newer-schema", run("--store", "newer.sqlite"), "was written by a newer cdkd-bench (schema 99",
     _sqlite("newer.sqlite", "CREATE TABLE runs (run_id TEXT); PRAGMA user_version = 99;"))
case("store-folder-is-file", run("--store", "afile/results.sqlite"), "cannot create the folder of results store", _file("afile", b"x"))
case("cache-dir-is-file", run("--cache-dir", "afile"), "cannot write the cache to 'afile'", _file("afile", b"x"))
case("cache-dir-under-file", run("--cache-dir", "afile/cache"), "cannot write the cache to 'afile/cache'", _file("afile", b"x"))
case("cache-env-is-file", run(), "cannot write the cache to", _file("afile", b"x"), env={"CDKD_BENCH_CACHE": "afile"})
case("out-dir-is-file", run("--out-dir", "afile"), "cannot write leaderboard pages to 'afile'", _file("afile", b"x"))
case("out-dir-under-file", run("--out-dir", "afile/boards"), "cannot write leaderboard pages to 'afile/boards'", _file("afile", b"x"))
# --- leaderboard
BOARD = ["leaderboard", "--store", STORE]
case("board-unknown-suite", [*BOARD, "--suite", "embeded"], "unknown suite 'embeded'; did you mean 'embedded'?")
case("board-path-suite", [*BOARD, "--suite", "../README"], "unknown suite '../README'")
case("board-slash-suite", [*BOARD, "--suite", "a/b"], "unknown suite 'a/b'")
case("board-newline-suite", [*BOARD, "--suite", "embedded\n"], "unknown suite 'embedded\\n'")
case("board-empty-suite", [*BOARD, "--suite", ""], "unknown suite ''")
case("board-no-results", [*BOARD, "--suite", "digits"], "no results of suite 'digits'")
case("board-rule-needs-other-regime", [*BOARD, "--selection", "target_val"],
     "reads target_val.acc, which all 3 finished runs did not record (their label regime (uda) has no data for it")
case("board-missing-store", ["leaderboard", "--store", "nothing.sqlite"], "'nothing.sqlite' does not exist; give a results store")
case("board-store-folder", ["leaderboard", "--store", "storedir"], "the folder 'storedir' is not a results bundle (it has no manifest.json)",
     _folder("storedir"))
case("board-store-not-sqlite", ["leaderboard", "--store", "notes.txt"],
     "'notes.txt' is neither a results store (SQLite file) nor a results bundle",
     _file("notes.txt", b"plain text " * 100))
case("board-store-foreign", ["leaderboard", "--store", "other.db"], "SQLite file of another program",
     _sqlite("other.db", "CREATE TABLE invoices (id INTEGER);"))
case("board-store-newer", ["leaderboard", "--store", "newer.sqlite"], "newer cdkd-bench",
     _sqlite("newer.sqlite", "CREATE TABLE runs (run_id TEXT); PRAGMA user_version = 99;"))
case("board-out-dir-file", [*BOARD, "--out-dir", "afile"], "cannot write leaderboard pages to 'afile'", _file("afile", b"x"))
# --- forget
case("forget-unknown-id", ["forget", "--store", STORE, "0123456789abcdef"], "no run with id '0123456789abcdef'")
case("forget-one-typo-forgets-none", ["forget", "--store", STORE, "0123456789abcdef", "zz"], "nothing was forgotten")
case("forget-missing-store", ["forget", "--store", "nothing.sqlite", "abc"], "results store 'nothing.sqlite' does not exist")
# --- the command line itself
case("no-command", [], "name a command: list, plugins, run, leaderboard, forget")
case("unknown-command", ["rnu"], "argument COMMAND: invalid choice: 'rnu'")
case("unknown-flag", ["run", "--sed", "0"], "unrecognized arguments: --sed 0")
case("flag-without-value", ["run", "--seeds"], "argument --seeds: expected one argument")
case("list-unknown-kind", ["list", "recipes"], "argument kind: invalid choice: 'recipes'")
case("forget-no-ids", ["forget"], "the following arguments are required: RUN_ID")


def _rows(path: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT * FROM runs ORDER BY run_id").fetchall()


@pytest.fixture(scope="module")
def finished_store(tmp_path_factory: pytest.TempPathFactory, session_data: Path) -> Path:
    """A store holding the finished runs of a real (smoke) grid."""
    folder = tmp_path_factory.mktemp("finished")
    cache = folder / "cache"
    cache.mkdir()
    (cache / "data").symlink_to(session_data, target_is_directory=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setenv("CDKD_BENCH_CACHE", str(cache))
        assert main(RUN) == 0
    return folder / STORE


def test_the_corpus_is_large_and_its_ids_unique() -> None:
    assert len(CASES) >= 100
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case_id, argv, setup, env, fragment", CASES, ids=[c[0] for c in CASES])
def test_a_user_mistake_gets_one_sentence_exit_2_and_leaves_the_store_alone(
    case_id: str, argv: list[str], setup: Callable[[], None], env: dict[str, str], fragment: str,
    finished_store: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    shutil.copy(finished_store, STORE)
    before = _rows(Path(STORE))
    setup()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    try:
        status = main(argv)
    except SystemExit as exit_:  # argparse's own mistakes leave through SystemExit
        status = exit_.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("cdkd-bench: error: "), err
    assert fragment in lines[0], err
    assert "Traceback" not in err
    assert _rows(Path(STORE)) == before
    assert not Path("leaderboards/embedded.md").exists()  # nothing was written for a command that failed
