"""Results bundles: a store's runs as plain files anyone can publish, check, merge and read like a store.

A bundle is a folder of two files. ``runs.jsonl`` holds one JSON object per run (done and
failed), sorted by run id, with sorted keys: the full spec, metrics, timings, provenance and
error. ``manifest.json`` says what the runs are: per suite the protocols present, each
domain's version and data content hash, each method component's version, and the counts of
runs, with the SHA-256 of ``runs.jsonl``. Nothing in either file depends on when or where the
bundle was written, so the same store always gives the same bytes.

``open_results`` reads any mix of stores and bundles as one ``Results``, refusing (in one
sentence) inputs whose numbers could not share a table: the same suite with other data, other
budget numbers under one name, other component versions or another protocol version.
Torch-free: the leaderboard reads bundles through it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import cdkd_bench
from cdkd_bench.errors import UserError
from cdkd_bench.spec import PROTOCOL_VERSION, RunSpec, canonical_json
from cdkd_bench.store import Store, StoredRun

if TYPE_CHECKING:
    from cdkd_bench.plugins import Host

BUNDLE_FORMAT = "cdkd-bench results bundle"
FORMAT_VERSION = 1
"""Bump when the layout of ``runs.jsonl`` or ``manifest.json`` changes; readers refuse other versions."""
RUNS_FILE = "runs.jsonl"
MANIFEST_FILE = "manifest.json"
_SQLITE_HEADER = b"SQLite format 3\x00"


class RunReader(Protocol):
    """What reads results: a ``Store`` and a ``Results`` both answer these (the leaderboard needs nothing else)."""

    def runs(self, suite: str | None = None, status: str | None = "done") -> list[StoredRun]: ...

    def suites(self) -> list[str]: ...


def _run_order(run: StoredRun) -> tuple[Any, ...]:
    # Store.runs orders by these columns; the run id breaks their ties so that merged inputs read the same every time.
    return (run.spec.suite, run.spec.task, run.spec.recipe, run.spec.seed, run.run_id)


class Results:
    """Runs from one or more stores and bundles, merged; read exactly as a ``Store`` is read."""

    def __init__(self, runs: Iterable[StoredRun], inputs: Sequence[str] = ()) -> None:
        self._runs = sorted(runs, key=_run_order)
        self.inputs = list(inputs)
        """The stores and bundles the runs came from, as they were named."""

    def runs(self, suite: str | None = None, status: str | None = "done") -> list[StoredRun]:
        return [r for r in self._runs if (suite is None or r.spec.suite == suite) and (status is None or r.status == status)]

    def suites(self) -> list[str]:
        return sorted({r.spec.suite for r in self._runs})

    def run(self, run_id: str) -> StoredRun | None:
        return next((r for r in self._runs if r.run_id == run_id), None)


# --------------------------------------------------------------------------- what a set of runs is


def budget_numbers(spec: RunSpec) -> dict[str, Any]:
    """The numbers a budget name stands for in this run: two inputs may share a name only with the same numbers."""
    teacher = spec.teacher
    return {
        "student": {"steps": spec.steps, "batch_size": spec.batch_size, "lr": spec.lr, "weight_decay": spec.weight_decay,
                    "eval_points": spec.eval_points, "backbone_lr_mult": spec.backbone_lr_mult},
        "teacher": {"steps": teacher.steps, "batch_size": teacher.batch_size, "lr": teacher.lr,
                    "weight_decay": teacher.weight_decay, "backbone_lr_mult": teacher.backbone_lr_mult},
    }


def _protocol(spec: RunSpec) -> dict[str, Any]:
    return {"label_regime": spec.label_regime, "budget": spec.budget, "budget_numbers": budget_numbers(spec),
            "numerics": spec.numerics, "protocol_version": spec.protocol}


def _domains(spec: RunSpec) -> list[tuple[str, int, str]]:
    return [(spec.source, spec.teacher.source_version, spec.teacher.source_data),
            (spec.target, spec.target_version, spec.target_data)]


def _components(spec: RunSpec) -> dict[str, int]:
    """Every method component a run's numbers depend on: its recipe's and its adapted teacher's."""
    return {**spec.teacher.recipe_versions, **spec.method_versions}


def describe_suite(runs: Sequence[StoredRun]) -> dict[str, Any]:
    """One suite's part of a manifest: protocols, domains, components and counts, every list sorted."""
    protocols = {canonical_json(p): p for p in map(_protocol, (r.spec for r in runs))}
    domains: dict[str, set[tuple[int, str]]] = defaultdict(set)
    methods: dict[str, set[int]] = defaultdict(set)
    for run in runs:
        for name, version, data in _domains(run.spec):
            domains[name].add((version, data))
        for name, version in _components(run.spec).items():
            methods[name].add(version)
    return {
        "runs": {status: sum(r.status == status for r in runs) for status in ("done", "failed")},
        "protocols": [protocols[key] for key in sorted(protocols)],
        "domains": {name: [{"version": v, "data": d} for v, d in sorted(pairs)] for name, pairs in sorted(domains.items())},
        "methods": {name: sorted(versions) for name, versions in sorted(methods.items())},
    }


def describe_suites(runs: Sequence[StoredRun]) -> dict[str, dict[str, Any]]:
    by_suite: dict[str, list[StoredRun]] = defaultdict(list)
    for run in runs:
        by_suite[run.spec.suite].append(run)
    return {suite: describe_suite(members) for suite, members in sorted(by_suite.items())}


# --------------------------------------------------------------------------- writing


def _run_record(run: StoredRun) -> dict[str, Any]:
    # No traceback: it names files of the machine that ran it, and the error already says what went wrong.
    return {"run_id": run.run_id, "status": run.status, "spec": run.spec.to_dict(), "metrics": run.metrics,
            "timings": run.timings, "provenance": run.provenance, "error": run.error, "finished_at": run.finished_at}


def runs_jsonl(runs: Iterable[StoredRun]) -> bytes:
    lines = [json.dumps(_run_record(r), sort_keys=True, separators=(",", ":")) for r in sorted(runs, key=lambda r: r.run_id)]
    return "".join(line + "\n" for line in lines).encode("utf-8")


def manifest_for(runs: Sequence[StoredRun], content: bytes) -> dict[str, Any]:
    return {
        "format": BUNDLE_FORMAT,
        "format_version": FORMAT_VERSION,
        "cdkd_bench": cdkd_bench.__version__,
        "protocol_version": PROTOCOL_VERSION,
        "runs": {status: sum(r.status == status for r in runs) for status in ("done", "failed")},
        "suites": describe_suites(runs),
        "content_sha256": hashlib.sha256(content).hexdigest(),
    }


def bundle_files(runs: Sequence[StoredRun]) -> dict[str, bytes]:
    """The bundle's files by name, as bytes: a pure function of the runs (and this cdkd-bench's version)."""
    content = runs_jsonl(runs)
    manifest = json.dumps(manifest_for(runs, content), indent=2, sort_keys=True) + "\n"
    return {RUNS_FILE: content, MANIFEST_FILE: manifest.encode("utf-8")}


def export_bundle(source: RunReader, out: Path, suite: str | None = None, name: str = "the store") -> dict[str, Any]:
    """Write ``source``'s runs (of ``suite``, or all) as a bundle folder ``out``; returns the manifest.

    ``out`` must not exist or be an empty folder. The files are written to a temporary folder
    beside it, which is then renamed: ``out`` is either the whole bundle or untouched.
    """
    _check_out(out)
    runs = source.runs(suite=suite, status=None)
    if not runs:
        held = ", ".join(source.suites())
        if suite is None or not held:
            raise UserError(f"{name} holds no runs, so there is nothing to export; run `cdkd-bench run` first")
        raise UserError(f"{name} holds no runs of suite {suite!r} (it holds: {held}); nothing was exported")
    files = bundle_files(runs)
    _write_folder_atomically(out, files)
    manifest: dict[str, Any] = json.loads(files[MANIFEST_FILE])
    return manifest


def _check_out(out: Path) -> None:
    if out.is_dir() and any(out.iterdir()):
        raise UserError(f"{str(out)!r} already exists and is not empty; give --out a new or empty folder")
    if out.exists() and not out.is_dir():
        raise UserError(f"{str(out)!r} exists and is not a folder; give --out a new or empty folder")


def _write_folder_atomically(out: Path, files: Mapping[str, bytes]) -> None:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        temporary = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    except OSError as exc:
        raise UserError(f"cannot write to the folder {str(out.parent)!r} ({exc.strerror or exc}); choose another --out") from None
    try:
        for file_name, data in files.items():
            (temporary / file_name).write_bytes(data)
        os.chmod(temporary, 0o755)  # mkdtemp's folder is private; a bundle is meant to be shared
        if out.is_dir():
            out.rmdir()  # empty (checked): renaming onto it would fail on some systems
        os.rename(temporary, out)
    except OSError as exc:
        raise UserError(f"cannot write the bundle {str(out)!r} ({exc.strerror or exc}); choose another --out") from None
    finally:
        if temporary.exists():
            shutil.rmtree(temporary, ignore_errors=True)


# --------------------------------------------------------------------------- reading one input


def _decode_record(record: Any) -> StoredRun:
    if not isinstance(record, dict):
        raise TypeError("not a JSON object")
    return StoredRun(
        run_id=str(record["run_id"]), status=str(record["status"]), spec=RunSpec.from_dict(record["spec"]),
        metrics=dict(record["metrics"] or {}), timings=dict(record["timings"] or {}),
        provenance=dict(record["provenance"] or {}), error=record["error"], finished_at=str(record["finished_at"]),
    )


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{str(path)!r} cannot be read as a bundle manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise UserError(f"{str(path)!r} is not the manifest of a cdkd-bench results bundle")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        newer = isinstance(version, int) and version > FORMAT_VERSION
        hint = "upgrade cdkd-bench to read it" if newer else "export it again with this cdkd-bench"
        raise UserError(f"{str(path)!r} has bundle format version {version!r} and this cdkd-bench reads version {FORMAT_VERSION}; {hint}")
    return manifest


def read_bundle(folder: Path) -> list[StoredRun]:
    """A bundle's runs, after checking its format version, its content hash and that its manifest describes them."""
    manifest_path, runs_path = folder / MANIFEST_FILE, folder / RUNS_FILE
    manifest = _read_manifest(manifest_path)
    try:
        content = runs_path.read_bytes()
    except OSError as exc:
        raise UserError(f"{str(runs_path)!r} cannot be read ({exc.strerror or exc}); a bundle needs its {RUNS_FILE}") from None
    if hashlib.sha256(content).hexdigest() != manifest.get("content_sha256"):
        raise UserError(f"{str(runs_path)!r} does not match the content_sha256 of its manifest: it was changed after export")
    runs = _parse_runs(content, runs_path)
    # The hash covers runs.jsonl only: a manifest edited by hand could claim other versions than its runs hold.
    if json.loads(json.dumps(describe_suites(runs))) != manifest.get("suites"):
        raise UserError(f"{str(manifest_path)!r} does not describe the runs of its {RUNS_FILE}; export the bundle again")
    return runs


def _parse_runs(content: bytes, path: Path) -> list[StoredRun]:
    runs: list[StoredRun] = []
    seen: set[str] = set()
    for number, line in enumerate(content.decode("utf-8", errors="replace").splitlines(), start=1):
        try:
            run = _decode_record(json.loads(line))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UserError(f"line {number} of {str(path)!r} is not a run record ({type(exc).__name__}: {exc})") from None
        if run.run_id in seen:
            raise UserError(f"{str(path)!r} lists run {run.run_id} twice; export the bundle again")
        seen.add(run.run_id)
        runs.append(run)
    return runs


def _is_sqlite(path: Path) -> bool:
    try:
        with path.open("rb") as file:
            return file.read(len(_SQLITE_HEADER)) == _SQLITE_HEADER
    except OSError:
        return False


def read_input(path: Path) -> list[StoredRun]:
    """Every run (done and failed) of a store, a bundle folder or a bundle's manifest.json."""
    where = str(path)
    if not path.exists():
        raise UserError(f"{where!r} does not exist; give a results store (SQLite file) or a results bundle folder")
    if path.is_dir():
        if not (path / MANIFEST_FILE).is_file():
            raise UserError(f"the folder {where!r} is not a results bundle (it has no {MANIFEST_FILE})")
        return read_bundle(path)
    if path.name == MANIFEST_FILE:
        return read_bundle(path.parent)
    if _is_sqlite(path):
        return Store(path, read_only=True).runs(status=None)
    raise UserError(f"{where!r} is neither a results store (SQLite file) nor a results bundle (a folder with {MANIFEST_FILE})")


# --------------------------------------------------------------------------- merging


def _versions(values: Iterable[Any]) -> str:
    listed = [str(v) for v in sorted(values)]
    return f"version {listed[0]}" if len(listed) == 1 else f"versions {', '.join(listed[:-1])} and {listed[-1]}"


def _domain_words(variants: Iterable[tuple[int, str]]) -> str:
    return " or ".join(f"version {v} with data content hash {d or '(none)'}" for v, d in sorted(variants))


def _budget_words(mine: set[str], theirs: set[str], a: str, b: str) -> str:
    """Which budget numbers differ, named field by field where each side has one set of numbers."""
    if len(mine) == 1 and len(theirs) == 1:
        left, right = json.loads(next(iter(mine))), json.loads(next(iter(theirs)))
        fields = [f"{role}.{key} is {left[role][key]} in {a} but {right[role].get(key)} in {b}"
                  for role in sorted(left) for key in sorted(left[role]) if left[role][key] != right.get(role, {}).get(key)]
        if fields:
            return ", ".join(fields)
    return f"its numbers are {' or '.join(sorted(mine))} in {a} but {' or '.join(sorted(theirs))} in {b}"


class _Input:
    """One store or bundle being merged: its name, its runs, and per suite what must match across inputs."""

    def __init__(self, name: str, runs: list[StoredRun]) -> None:
        self.name = name
        self.runs = runs
        self.suites = describe_suites(runs)

    def domains(self, suite: str) -> dict[str, set[tuple[int, str]]]:
        return {name: {(v["version"], v["data"]) for v in variants} for name, variants in self.suites[suite]["domains"].items()}

    def budgets(self, suite: str) -> dict[str, set[str]]:
        found: dict[str, set[str]] = defaultdict(set)
        for protocol in self.suites[suite]["protocols"]:
            found[protocol["budget"]].add(canonical_json(protocol["budget_numbers"]))
        return dict(found)

    def methods(self, suite: str) -> dict[str, set[int]]:
        return {name: set(versions) for name, versions in self.suites[suite]["methods"].items()}

    def protocol_versions(self, suite: str) -> set[int]:
        return {p["protocol_version"] for p in self.suites[suite]["protocols"]}


def _mismatch(earlier: _Input, later: _Input, suite: str) -> str | None:
    """The first reason the two inputs' runs of ``suite`` cannot be merged, as the end of a sentence; None if they can."""
    a, b = repr(earlier.name), repr(later.name)
    mine, theirs = earlier.protocol_versions(suite), later.protocol_versions(suite)
    if mine != theirs:
        return f"its runs in {a} are of protocol {_versions(mine)} but in {b} of protocol {_versions(theirs)}"
    domains, other_domains = earlier.domains(suite), later.domains(suite)
    for name in sorted(domains.keys() & other_domains.keys()):
        if domains[name] != other_domains[name]:
            return (f"domain {name!r} is {_domain_words(domains[name])} in {a} but {_domain_words(other_domains[name])} in {b}, "
                    "so their runs saw other images")
    budgets, other_budgets = earlier.budgets(suite), later.budgets(suite)
    for name in sorted(budgets.keys() & other_budgets.keys()):
        if budgets[name] != other_budgets[name]:
            return f"budget {name!r} has other numbers ({_budget_words(budgets[name], other_budgets[name], a, b)})"
    methods, other_methods = earlier.methods(suite), later.methods(suite)
    for name in sorted(methods.keys() & other_methods.keys()):
        if methods[name] != other_methods[name]:
            return f"method component {name!r} is {_versions(methods[name])} in {a} but {_versions(other_methods[name])} in {b}"
    return None


def _check_compatible(earlier: _Input, later: _Input) -> None:
    for suite in sorted(earlier.suites.keys() & later.suites.keys()):
        reason = _mismatch(earlier, later, suite)
        if reason is not None:
            raise UserError(f"{earlier.name!r} and {later.name!r} cannot be merged: in suite {suite!r}, {reason}")


def _check_installed_versions(source: _Input, host: Host) -> None:
    """A result must match the method implementation it claims: refuse a component whose installed version differs.

    A component that is not installed (its plugin is not here, or was not imported) is allowed:
    its results are shown as recorded.
    """
    # Traits, not classes: a leaderboard host imports no method, and the plugin index records their versions.
    installed_versions = {name: traits.version for name, traits in host.method_traits().items() if traits.version is not None}
    for suite in sorted(source.suites):
        for name, versions in sorted(source.methods(suite).items()):
            if name not in installed_versions:
                continue
            installed = installed_versions[name]
            stale = sorted(v for v in versions if v != installed)
            if stale:
                raise UserError(f"{source.name!r} holds results of method component {name!r} {_versions(stale)} (suite {suite!r}), "
                                f"but the installed {name} is version {installed}; re-run them or read them where that version is installed")


def merge_runs(inputs: Sequence[tuple[str, list[StoredRun]]]) -> list[StoredRun]:
    """Every run once: a done copy wins over a failed one, and two done copies must agree on every metric."""
    kept: dict[str, tuple[str, StoredRun]] = {}
    for name, runs in inputs:
        for run in runs:
            prior = kept.get(run.run_id)
            if prior is None or (prior[1].status == "failed" and run.status == "done"):
                kept[run.run_id] = (name, run)
            elif prior[1].status == "done" and run.status == "done" and _metrics_json(prior[1]) != _metrics_json(run):
                raise UserError(f"run {run.run_id} is done in both {prior[0]!r} and {name!r} but with different metrics; "
                                "one of them is not the result of that run, so neither is kept")
    return [run for _, run in kept.values()]


def _metrics_json(run: StoredRun) -> str:
    # As text: a NaN metric equals itself here, where == on floats would call two identical copies different.
    return json.dumps(run.metrics, sort_keys=True)


def open_results(paths: Sequence[Path], host: Host | None = None) -> Results:
    """Stores and bundles (folders or their manifest.json), checked and merged into one ``Results``.

    With ``host``, every result's component versions must equal the installed components'.
    Any problem is one ``UserError`` sentence naming the input(s); nothing is written.
    """
    if not paths:
        raise UserError("no results store or bundle was given")
    inputs: list[_Input] = []
    for path in paths:
        current = _Input(str(path), read_input(Path(path)))
        if host is not None:
            _check_installed_versions(current, host)
        for earlier in inputs:
            _check_compatible(earlier, current)
        inputs.append(current)
    return Results(merge_runs([(i.name, i.runs) for i in inputs]), [i.name for i in inputs])
