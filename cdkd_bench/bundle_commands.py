"""``cdkd-bench export`` (a store → a results bundle) and ``cdkd-bench verify`` (re-run a sample of a bundle's runs).

``verify`` trusts nothing but the stored specs: each sampled run is trained again by the
engine, exactly as a grid trains it, into a temporary store, and its target accuracy at
every checkpoint is compared with the bundle's. The engine is imported only there, so
``export`` never imports torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import random
import re
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cdkd_bench.bundles import export_bundle, open_results
from cdkd_bench.errors import UserError
from cdkd_bench.spec import PROTOCOL_VERSION, RunSpec
from cdkd_bench.store import Store, StoredRun

if TYPE_CHECKING:
    from cdkd_bench.plugins import Host
    from cdkd_bench.settings import EngineSettings

METRIC = "target_test.acc"
_CPU_THREADS = re.compile(r"cpu fp32 (\d+) threads?")


# --------------------------------------------------------------------------- export


def cmd_export(args: argparse.Namespace) -> int:
    from cdkd_bench.cli import DEFAULT_STORE

    path = args.store or Path(DEFAULT_STORE)
    if not path.exists():
        raise UserError(f"results store {str(path)!r} does not exist; pass --store")
    store = Store(path, read_only=True)
    manifest = export_bundle(store, args.out, args.suite, name=f"results store {str(path)!r}")
    counts = manifest["runs"]
    print(f"exported {counts['done']} done and {counts['failed']} failed runs of suite(s) {', '.join(manifest['suites'])} "
          f"to {str(args.out)!r} (runs.jsonl sha256 {manifest['content_sha256']})", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------- comparing a run with its re-run


@dataclass(frozen=True)
class Point:
    """One checkpoint's target accuracy, as stored and as reproduced (None: that number is missing)."""

    step: int | None
    stored: float | None
    reproduced: float | None

    @property
    def difference(self) -> float | None:
        return None if self.stored is None or self.reproduced is None else self.reproduced - self.stored


@dataclass(frozen=True)
class Verdict:
    """What became of one sampled run: reproduced within tolerance or not, or why it could not be re-run here."""

    run: StoredRun
    points: tuple[Point, ...] = ()
    reproduced: bool = False
    problem: str | None = None


def accuracy_points(metrics: Mapping[str, Any]) -> list[tuple[int | None, float | None]]:
    """(step, target accuracy) at each evaluated checkpoint; runs stored before checkpoints existed give their one number."""
    history = metrics.get("checkpoints") or [metrics]
    return [(point.get("step"), _number(point.get(METRIC))) for point in history]


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) else None


def compare(run: StoredRun, reproduced: Mapping[str, Any], tolerance: float) -> Verdict:
    stored_points, new_points = accuracy_points(run.metrics), accuracy_points(reproduced)
    points = tuple(Point(step, old, new) for (step, old), (_, new) in zip(stored_points, new_points, strict=False))
    steps, new_steps = [s for s, _ in stored_points], [s for s, _ in new_points]
    if steps != new_steps:
        return Verdict(run, points, False, f"it is stored with checkpoints at steps {steps} but the re-run evaluated steps {new_steps}")
    missing = [p.step for p in points if p.difference is None]
    if missing:
        return Verdict(run, points, False, f"{METRIC} is missing or not a number at step(s) {missing}")
    worst = max(points, key=lambda p: abs(p.difference or 0.0))
    if abs(worst.difference or 0.0) > tolerance + 1e-9:  # the slack: 0.5 stored as 0.49999999 is within 0.5
        return Verdict(run, points, False, f"at step {worst.step} it differs by {worst.difference:+.2f} points "
                       f"(tolerance {tolerance:g})")
    return Verdict(run, points, True)


# --------------------------------------------------------------------------- sampling and settings


def sample_runs(runs: Sequence[StoredRun], k: int, seed: int, name: str) -> list[StoredRun]:
    """``k`` finished runs drawn with ``seed`` from those sorted by id: the same bundle and seed give the same sample anywhere."""
    done = sorted((r for r in runs if r.status == "done"), key=lambda r: r.run_id)
    if not done:
        raise UserError(f"{name!r} holds no finished runs to verify")
    if k < 1:
        raise UserError(f"--sample must be at least 1, got {k}")
    if k > len(done):
        raise UserError(f"--sample {k} is more than the {len(done)} finished runs of {name!r}; give at most {len(done)}")
    picked = random.Random(seed).sample(done, k)
    return sorted(picked, key=lambda r: (r.spec.task, r.spec.recipe, r.spec.seed, r.run_id))


@dataclass(frozen=True)
class Plan:
    """How a run is re-run here: the engine settings that give its numerics, and its vmapped siblings' seeds."""

    settings: EngineSettings
    ensemble_seeds: tuple[int, ...] = ()


def plan_rerun(run: StoredRun, host: Host, base: EngineSettings, threads: int | None) -> Plan | str:
    """The settings that recompute ``run`` as it was computed, or one sentence saying why this machine cannot."""
    spec = run.spec
    refusal = _unavailable_here(spec, host)
    if refusal is not None:
        return refusal
    import torch

    from cdkd_bench.compute import numerics

    planned = spec.numerics
    on_cuda = planned.startswith("cuda")
    if on_cuda and not torch.cuda.is_available():
        return f"it was computed on CUDA ({planned!r}) and this machine has no CUDA device"
    match = _CPU_THREADS.match(planned)
    cpu_threads = threads or (int(match.group(1)) if match else 1)
    compiled, vmapped = ", compiled (" in planned, ", seeds vmapped" in planned
    device = "cuda" if on_cuda else "cpu"
    here = numerics(torch.device(device), cpu_threads, compiled, vmapped)
    if here != planned:
        return f"it was computed as {planned!r} and would be computed here as {here!r}"
    settings = dataclasses.replace(base, device=device, threads=cpu_threads, compile=compiled, vmap_seeds=vmapped)
    seeds = _ensemble_seeds(run) if vmapped else ()
    return Plan(settings, seeds) if isinstance(seeds, tuple) else seeds


def _ensemble_seeds(run: StoredRun) -> tuple[int, ...] | str:
    """The seeds a vmapped run was trained with, from its provenance (the grid records them), its own among them."""
    listed = run.provenance.get("vmapped_with_seeds") or [run.spec.seed]
    if not isinstance(listed, list) or not all(isinstance(s, int) for s in listed) or run.spec.seed not in listed:
        return f"it was trained in a vmapped ensemble whose seeds its provenance does not list ({listed!r})"
    return tuple(listed)


def _unavailable_here(spec: RunSpec, host: Host) -> str | None:
    if spec.protocol != PROTOCOL_VERSION:
        return f"it was computed under protocol version {spec.protocol} and this cdkd-bench computes version {PROTOCOL_VERSION}"
    if spec.suite not in host.suites:
        return f"its suite {spec.suite!r} is not installed here"
    for name, version in sorted({**spec.teacher.recipe_versions, **spec.method_versions}.items()):
        if name not in host.methods:
            return f"its component {name!r} is not installed here"
        installed = host.methods.get(name).version
        if installed != version:
            return f"it was computed with {name} version {version} and version {installed} is installed here"
    return None


# --------------------------------------------------------------------------- re-running


def rerun(run: StoredRun, plan: Plan) -> dict[str, Any]:
    """Train the run again through the grid's job runner; an ensemble member is trained with its siblings, as it was."""
    from cdkd_bench.declarations import Job
    from cdkd_bench.jobs import run_job

    spec = run.spec
    if not plan.ensemble_seeds:
        return run_job(Job("run", spec, plan.settings))
    # Vmapped seeds sum in another order than a run alone: the member is only reproduced inside its ensemble.
    members = tuple(dataclasses.replace(spec, seed=s, teacher=dataclasses.replace(spec.teacher, seed=s)) for s in plan.ensemble_seeds)
    result = run_job(Job("ensemble", members, plan.settings))
    if result["status"] != "done":
        return result
    return {"status": "done", **result["members"][plan.ensemble_seeds.index(spec.seed)]}


def verify_runs(runs: Sequence[StoredRun], host: Host, base: EngineSettings, threads: int | None, tolerance: float,
                report: Callable[[Verdict], None], show_progress: bool = True) -> list[Verdict]:
    """Re-run each run into a temporary store and compare; ``report`` hears each verdict as soon as it is known."""
    from tqdm.auto import tqdm

    from cdkd_bench.jobs import use_host
    from cdkd_bench.training import progress_disabled

    use_host(host)  # the jobs run in this process, with the plugins this command loaded
    verdicts = []
    with tempfile.TemporaryDirectory(prefix="cdkd-bench-verify-") as folder:
        store = Store(Path(folder) / "reproduced.sqlite")
        bar = tqdm(runs, desc="verify", unit="run", disable=progress_disabled(show_progress))
        for number, run in enumerate(bar, start=1):
            bar.set_postfix_str(f"{run.spec.recipe} seed {run.spec.seed}")
            # Also as a line: without a terminal there is no bar, and one re-run may take hours on a real suite.
            tqdm.write(f"verify: re-running run {run.run_id} ({number} of {len(runs)})", file=sys.stderr)
            verdict = _verify_one(run, host, base, threads, tolerance, store)
            verdicts.append(verdict)
            report(verdict)
        bar.close()
    return verdicts


def _verify_one(run: StoredRun, host: Host, base: EngineSettings, threads: int | None, tolerance: float, store: Store) -> Verdict:
    plan = plan_rerun(run, host, base, threads)
    if isinstance(plan, str):
        return Verdict(run, problem=plan)
    store.record(run.spec, rerun(run, plan))
    again = store.run(run.spec.run_id)
    if again is None or again.status != "done":
        error = again.error if again is not None else "nothing was recorded"
        return Verdict(run, problem=f"the re-run failed: {error}")
    return compare(run, again.metrics, tolerance)


# --------------------------------------------------------------------------- the command


def render_verdict(verdict: Verdict) -> str:
    spec = verdict.run.spec
    lines = [f"run {verdict.run.run_id}: {spec.task}, {spec.recipe}, seed {spec.seed}, budget {spec.budget}, {spec.numerics}"]
    if verdict.points:
        lines.append(f"  {'step':>6}  {'stored':>8}  {'reproduced':>10}  {'difference':>10}")
        for p in verdict.points:
            cells = [_cell(p.stored, 8), _cell(p.reproduced, 10), _cell(p.difference, 10, signed=True)]
            lines.append(f"  {p.step if p.step is not None else '-':>6}  " + "  ".join(cells))
    if verdict.reproduced:
        lines.append("  reproduced")
    else:
        lines.append(f"  NOT reproduced: {verdict.problem}" if verdict.points else f"  NOT verified: {verdict.problem}")
    return "\n".join(lines)


def _cell(value: float | None, width: int, signed: bool = False) -> str:
    return f"{value:>+{width}.2f}" if signed and value is not None else (f"{value:>{width}.2f}" if value is not None else f"{'-':>{width}}")


def _summary(verdicts: Sequence[Verdict], tolerance: float) -> str:
    reproduced = sum(v.reproduced for v in verdicts)
    unrun = sum(not v.points and not v.reproduced for v in verdicts)
    line = f"verify: {reproduced} of {len(verdicts)} sampled runs reproduce within {tolerance:g} points of target accuracy"
    return line + (f"; {unrun} could not be re-run here" if unrun else "")


def _tolerance(value: float) -> float:
    if not math.isfinite(value) or value < 0:
        raise UserError(f"--tolerance must be a number of points, 0 or more, got {value:g}")
    return value


def cmd_verify(args: argparse.Namespace) -> int:
    from cdkd_bench.compute import parse_threads

    name = str(args.bundle)
    results = open_results([args.bundle])
    tolerance = _tolerance(args.tolerance)
    threads = parse_threads(args.threads, "--threads") if args.threads is not None else None
    chosen = sample_runs(results.runs(), args.sample, args.seed, name)
    host, base = _engine(args)
    print(f"verify: re-running {len(chosen)} of the {len(results.runs())} finished runs of {name!r} (sample seed {args.seed})",
          file=sys.stderr)
    from tqdm.auto import tqdm

    verdicts = verify_runs(chosen, host, base, threads, tolerance, lambda v: tqdm.write(render_verdict(v), file=sys.stdout),
                           show_progress=not args.no_progress)
    print(_summary(verdicts, tolerance))
    return 0 if all(v.reproduced for v in verdicts) else 1


def _engine(args: argparse.Namespace) -> tuple[Host, EngineSettings]:
    """The plugins and the settings every re-run starts from (the device and threads are set per run)."""
    from cdkd_bench.engine import EngineSettings
    from cdkd_bench.folders import writable_folder
    from cdkd_bench.locations import default_cache_dir, default_data_root
    from cdkd_bench.plugins import load_host

    host = load_host()
    for info in host.failed_plugins:
        print(f"cdkd-bench: warning: plugin {info.describe()} failed to load and was skipped: {info.error}", file=sys.stderr)
    base = EngineSettings(
        cache_dir=writable_folder(args.cache_dir or default_cache_dir(), "the cache", "--cache-dir (or CDKD_BENCH_CACHE)"),
        data_root=args.data_root or default_data_root(), device="cpu", workers=1, show_progress=not args.no_progress,
        command=getattr(args, "command_line", ""),
    )
    return host, base
