"""The contributor's path as a user walks it: plugin packages installed with pip, then listed, run and ranked by the CLI.

Packages are built from a copy of their folder (pip builds in the source tree) and installed
with ``pip install --no-deps --no-build-isolation --target SITE``: offline, with the
environment's setuptools. Subprocesses get ``PYTHONPATH=SITE``, which is enough for the
installed ``*.dist-info/entry_points.txt`` to put the package in the ``cdkd_bench`` group.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cdkd_bench.errors import UserError
from cdkd_bench.scaffold import write_method_package, write_suite_package
from cdkd_bench.testing import check_domain, check_suite

REPO = Path(__file__).resolve().parents[1]
NST_EXAMPLE = REPO / "examples" / "cdkd-nst"
TASK = "printed_to_handwritten"
BUILD_LEFTOVERS = shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__", ".pytest_cache")


def pip_install(package: Path, site: Path) -> None:
    """``pip install`` a local package folder into ``site``, as a user would, without the network."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "--disable-pip-version-check",
         "--quiet", "--target", str(site), str(package)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def with_site(site: Path) -> dict[str, str]:
    """This process's environment (the test's CDKD_BENCH_CACHE included) with ``site`` first on the import path.

    One intra-op thread: the kit's networks are tiny, and on a busy machine torch's thread
    pool made a subprocess's ``check_method`` five times slower (runs use one thread anyway).
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH", "")) if p)
    env["OMP_NUM_THREADS"] = "1"
    return env


def cdkd_bench(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """The ``cdkd-bench`` command of this environment (its console script; the module's ``main`` where there is none)."""
    script = Path(sys.executable).with_name("cdkd-bench")
    command = [str(script)] if script.exists() else [sys.executable, "-c", "import sys; from cdkd_bench.cli import main; sys.exit(main())"]
    return subprocess.run([*command, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def nst_install(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(a copy of examples/cdkd-nst, the folder it is installed in)."""
    root = tmp_path_factory.mktemp("nst-example")
    source, site = root / "cdkd-nst", root / "site"
    shutil.copytree(NST_EXAMPLE, source, ignore=BUILD_LEFTOVERS)
    pip_install(source, site)
    return source, site


# In the slow env: the default run must stay under 10 minutes on 2 cores.
@pytest.mark.slow
def test_the_nst_example_installs_lists_runs_and_reaches_the_leaderboard(
    nst_install: tuple[Path, Path], cache_dir: Path, tmp_path: Path
) -> None:
    env = with_site(nst_install[1])
    assert env["CDKD_BENCH_CACHE"] == str(cache_dir)   # the session's generated data: nothing is generated again

    listed = cdkd_bench("list", "methods", "--filter", "nst", env=env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    line = next(line for line in listed.stdout.splitlines() if line.split()[:1] == ["nst"])
    assert "distillation" in line and "[nst 0.1.0]" in line

    store, pages = tmp_path / "results.sqlite", tmp_path / "pages"
    run = cdkd_bench("run", "--budget", "smoke", "--recipes", "nst", "--seeds", "0", "--tasks", TASK, "--store", str(store),
                     "--out-dir", str(pages), "--workers", "1", "--no-progress", env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    page = (pages / "embedded.md").read_text()
    row = next(line for line in page.splitlines() if line.startswith("| nst |"))
    assert "(n=1)" in row and "✗" not in row
    assert any(line.startswith("| source_only") for line in page.splitlines())   # beside the reference rows


def test_the_nst_example_passes_its_own_tests_once_installed(nst_install: tuple[Path, Path]) -> None:
    # Its formula tests (the paper's double sums in NumPy loops) and check_method, as its author runs them.
    source, site = nst_install
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], capture_output=True, text=True,
                           env=with_site(site), cwd=source, timeout=300)
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-3000:]
    assert " passed" in tests.stdout and "failed" not in tests.stdout


def test_a_generated_method_package_installs_and_its_own_tests_pass(tmp_path: Path) -> None:
    package = write_method_package("contrib_demo", tmp_path / "src")
    assert package == tmp_path / "src" / "cdkd-contrib-demo"
    assert {p.relative_to(package).as_posix() for p in package.rglob("*") if p.is_file()} == {
        "pyproject.toml", "README.md", "cdkd_contrib_demo/__init__.py", "tests/test_contrib_demo.py",
    }
    pyproject = (package / "pyproject.toml").read_text()
    assert 'name = "cdkd-contrib-demo"' in pyproject and 'contrib_demo = "cdkd_contrib_demo"' in pyproject
    site = tmp_path / "site"
    pip_install(package, site)
    assert (site / "cdkd_contrib_demo" / "__init__.py").exists()
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], capture_output=True, text=True,
                           env=with_site(site), cwd=package, timeout=300)
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-3000:]
    assert "5 passed" in tests.stdout


def test_a_generated_suite_conforms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = write_suite_package("contrib_shapes", tmp_path)
    assert (package / "tests" / "test_contrib_shapes.py").exists()
    monkeypatch.syspath_prepend(str(package))
    module = importlib.import_module("cdkd_contrib_shapes")
    try:
        check_suite(module.SUITE)
        for domain in module.DOMAINS:
            check_domain(domain)
        assert [t.name for t in module.SUITE.tasks] == ["contrib_shapes.clean_to_noisy", "contrib_shapes.noisy_to_clean"]
        assert "smoke" in module.SUITE.budgets
    finally:
        sys.modules.pop("cdkd_contrib_shapes", None)


@pytest.mark.parametrize(
    ("name", "complaint"),
    [("MyLoss", "lowercase"), ("2fast", "starting with a letter"), ("my-loss", "lowercase"), ("", "lowercase"),
     ("kd", "already installed"), ("embedded", "already taken")],
)
def test_the_method_scaffold_refuses_bad_or_taken_names(name: str, complaint: str, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=complaint):
        write_method_package(name, tmp_path)
    assert not any(tmp_path.iterdir())


def test_the_scaffolds_refuse_an_existing_folder(tmp_path: Path) -> None:
    (tmp_path / "cdkd-contrib-demo").mkdir()
    with pytest.raises(UserError, match="already exists"):
        write_method_package("contrib_demo", tmp_path)
    (tmp_path / "cdkd-contrib-shapes").write_text("")
    with pytest.raises(UserError, match="already exists"):
        write_suite_package("contrib_shapes", tmp_path)
    with pytest.raises(UserError, match="already installed"):
        write_suite_package("office31", tmp_path)
