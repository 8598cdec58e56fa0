"""The command line: cdkd-bench list | plugins | run | leaderboard | forget | status | runs show | export | verify."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from cdkd_bench.errors import UserError
from cdkd_bench.registry import RegistrationError

LIST_KINDS = ("suites", "tasks", "methods", "archs")
# Plugin families each light command reads; load_host imports only the plugins providing them
# (and any the plugin index cannot vouch for), so these commands never import torch.
LISTED_FROM_SUITES = {"suites", "tasks"}
LEADERBOARD_FAMILIES = ("suite", "selector")
DEFAULT_STORE = "cdkd-results.sqlite"
MIN_RUN_PREFIX = 6


class _Parser(argparse.ArgumentParser):
    """argparse, but a mistake is one line (no usage block) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"cdkd-bench: error: {message} (see `{self.prog} --help`)\n")


def _raw_list(text: str) -> tuple[str, ...]:
    """Comma-separated items, empty ones kept so that validation can refuse them."""
    return tuple(p.strip() for p in text.split(","))


def _seed_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in _raw_list(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be comma-separated whole numbers, got {text!r}") from None


def _format_list(text: str) -> tuple[str, ...]:
    from cdkd_bench.leaderboard import LEADERBOARD_FORMATS

    formats = LEADERBOARD_FORMATS if text.strip() == "all" else _raw_list(text)
    unknown = [name for name in formats if name not in LEADERBOARD_FORMATS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown leaderboard format {unknown[0]!r}; choose from {', '.join(LEADERBOARD_FORMATS)} or all")
    return tuple(formats)


def _path(text: str) -> Path:
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path was given")
    if any(ord(c) < 32 for c in text):
        raise argparse.ArgumentTypeError(f"the path {text!r} has a line break or control character")
    return Path(text).expanduser()


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="cdkd-bench",
        description="Benchmark cross-domain knowledge distillation: run grids, fill leaderboards.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p_list = sub.add_parser("list", help="list suites, tasks, methods or architectures and the plugins providing them")
    p_list.add_argument("kind", nargs="?", choices=LIST_KINDS, help="what to list (default: all but archs)")
    p_list.add_argument("--filter", default="*", help="glob on names, e.g. 'resnet*' (default: everything)")
    p_list.add_argument("--markdown", action="store_true", help="with `methods`: the Markdown table of docs/methods.md")

    p_plugins = sub.add_parser("plugins", help="list loaded plugins, their versions, the hooks each implements and what it "
                               "provides, and any that failed to load; `plugins check [NAME]` runs the conformance checks")
    plugins_sub = p_plugins.add_subparsers(dest="plugins_command", metavar="ACTION", parser_class=_Parser)
    p_pcheck = plugins_sub.add_parser("check", help="run cdkd_bench.testing's conformance checks on installed plugins "
                                      "(every method, domain, suite, selector, executor and listed architecture); exit 1 on a failure")
    p_pcheck.add_argument("name", nargs="?", help="only this plugin (entry-point name, as `cdkd-bench plugins` lists it)")

    p_new = sub.add_parser("new", help="write a ready-to-install plugin package: `new method NAME` or `new suite NAME`")
    p_new.add_argument("kind", choices=("method", "suite"), help="what the package provides")
    p_new.add_argument("name", help="the plugin's name: lowercase letters, digits and underscores")
    p_new.add_argument("--dir", type=_path, default=Path("."), help="where to write the package folder (default: here)")

    p_run = sub.add_parser("run", help="run a grid (no arguments: the default suite's default grid and budget)")
    _add_grid_args(p_run, out_dir=True)
    p_run.add_argument("--no-progress", action="store_true", help="no progress bars")
    p_run.add_argument("--ray-address", help="with --executor ray: the Ray cluster to run on (env CDKD_BENCH_RAY_ADDRESS; "
                       "default: a Ray instance started on this machine)")
    p_run.add_argument("--retry-failed", action="store_true",
                       help="run again the runs of this grid that failed before (by default they are left alone and listed)")

    p_board = sub.add_parser("leaderboard", help="render leaderboard tables from the results store")
    p_board.add_argument("--suite", help="suite name (default: the suite marked as default, embedded)")
    p_board.add_argument("--selection", help="model-selection rule applied to the stored checkpoints (default: last)")
    p_board.add_argument("--format", dest="formats", type=_format_list, default=("md",), metavar="FORMATS",
                         help="comma-separated files to write as <suite>.<format>: md, csv, json, tex (booktabs), html "
                         "(a self-contained page with plots), or all (default: md); the Markdown page is printed either way")
    p_board.add_argument("--store", dest="stores", action="append", type=_path, metavar="STORE",
                         help=f"SQLite results file; repeat to merge several (default: {DEFAULT_STORE} unless --bundle is given)")
    p_board.add_argument("--bundle", dest="bundles", action="append", type=_path, metavar="BUNDLE",
                         help="a results bundle (from `cdkd-bench export`); repeatable; merged with the stores when their "
                         "data, protocol, budgets and method versions match, refused in one sentence otherwise")
    _add_out_dir(p_board)

    p_forget = sub.add_parser("forget", help="delete stored runs (finished or failed) so the next grid runs them again")
    p_forget.add_argument("run_ids", nargs="+", metavar="RUN_ID", help="run hashes, as listed under a leaderboard's failures")
    _add_store_args(p_forget)

    p_status = sub.add_parser("status", help="count the store's runs (done, failed, running); with grid flags as for `run`, "
                              "also that grid's pending runs and an ETA (reads the store, never writes it)")
    _add_grid_args(p_status, out_dir=False)

    p_data = sub.add_parser("data", help="datasets under the data root: `data list`, `data check SUITE`, `data prepare SUITE`")
    data_sub = p_data.add_subparsers(dest="data_command", metavar="ACTION", parser_class=_Parser, required=True)
    p_dlist = data_sub.add_parser("list", help="each domain: found, cached, missing or generated, with image counts "
                                  "against the published ones")
    p_dlist.add_argument("--suite", help="only this suite (default: every suite)")
    p_check = data_sub.add_parser("check", help="verify published checksums and decode every image once; exit 2 on any problem")
    p_prepare = data_sub.add_parser("prepare", help="download where a public URL exists, verify, and decode into the cache")
    for p in (p_check, p_prepare):
        p.add_argument("suite", metavar="SUITE", help="suite name, e.g. digits or office31")
    for p in (p_dlist, p_check, p_prepare):
        p.add_argument("--data-root", type=_path, help="where real datasets live (env CDKD_BENCH_DATA)")
        p.add_argument("--cache-dir", type=_path, help="where decoded images are cached (env CDKD_BENCH_CACHE)")

    p_runs = sub.add_parser("runs", help="look at stored runs: `runs show RUN_ID`")
    runs_sub = p_runs.add_subparsers(dest="runs_command", metavar="ACTION", parser_class=_Parser, required=True)
    p_show = runs_sub.add_parser("show", help="one run's spec, status, metrics, timings, error and provenance")
    p_show.add_argument("run_id", metavar="RUN_ID", help=f"a run hash, or a unique prefix of at least {MIN_RUN_PREFIX} characters")
    _add_store_args(p_show)

    p_export = sub.add_parser("export", help="write the store's runs as a results bundle (runs.jsonl and manifest.json) "
                              "to publish, merge or verify")
    _add_store_args(p_export)
    p_export.add_argument("--suite", help="only this suite's runs (default: every suite in the store)")
    p_export.add_argument("--out", type=_path, required=True, help="the bundle folder to write (new or empty)")

    p_verify = sub.add_parser("verify", help="re-run a seeded sample of a bundle's finished runs and compare their target "
                              "accuracy at every checkpoint; exit 1 unless all reproduce")
    p_verify.add_argument("bundle", type=_path, metavar="BUNDLE", help="a results bundle folder (or its manifest.json, or a store)")
    p_verify.add_argument("--sample", type=int, default=3, metavar="K", help="how many finished runs to re-run (default: 3)")
    p_verify.add_argument("--tolerance", type=float, default=0.5, metavar="POINTS",
                          help="largest difference in target accuracy, in points, that still reproduces (default: 0.5)")
    p_verify.add_argument("--seed", type=int, default=0, help="seed of the sample (default: 0)")
    p_verify.add_argument("--cache-dir", type=_path, help="where data and teachers are cached (env CDKD_BENCH_CACHE)")
    p_verify.add_argument("--data-root", type=_path, help="where real datasets live (env CDKD_BENCH_DATA)")
    p_verify.add_argument("--threads", help="CPU threads per re-run (default: each run's own, from its numerics)")
    p_verify.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def _add_grid_args(parser: argparse.ArgumentParser, *, out_dir: bool) -> None:
    """The flags that say which grid (and on what) `run` runs; `status` takes the same ones to find the grid's runs."""
    parser.add_argument("--grid", type=_path, help="TOML grid file; flags given here override its keys")
    parser.add_argument("--suite", help="suite name (default: the suite marked as default, embedded)")
    parser.add_argument("--tasks", type=_raw_list, help="comma-separated task names (default: all of the suite's)")
    parser.add_argument("--teacher", help="teacher architecture (default: the suite's)")
    parser.add_argument("--student", help="student architecture (default: the suite's)")
    parser.add_argument("--teacher-weights", dest="teacher_weights", type=_path, metavar="FILE",
                        help="start the teacher from this local weights file (offline pretrained weights, e.g. timm's "
                        "ImageNet ResNet-50 .pth/.bin); a classifier of another class count is left freshly initialised")
    parser.add_argument("--student-weights", dest="student_weights", type=_path, metavar="FILE",
                        help="start the student from this local weights file")
    parser.add_argument("--recipes", type=_raw_list, help="comma-separated recipes, e.g. kd,kd+dann")
    parser.add_argument("--teacher-recipe", dest="teacher_recipe", type=_raw_list,
                        help="how teachers are made: source (default) or adaptation components, e.g. dann or dann+mcc; "
                        "comma-separated for several (each gets its own table)")
    parser.add_argument("--seeds", type=_seed_list, help="comma-separated seeds (default: the suite's)")
    parser.add_argument("--budget", help="budget name: quick, default, paper (default: the suite's)")
    parser.add_argument("--label-regime", dest="label_regime", help="which target labels students see: uda (none, the "
                        "default), ssda-K (K per class from the target train split, e.g. ssda-3) or sup (all target train labels)")
    parser.add_argument("--set", dest="hparams", action="append", default=[], metavar="METHOD.HPARAM=VALUE",
                        help="override a hyper-parameter, e.g. --set kd.temperature=2 (repeatable)")
    parser.add_argument("--trials", type=int, help="hparam configurations per recipe (default 1: the defaults): each is drawn "
                        "from the components' search spaces, tried on the first seed, and the one the selection rule scores best "
                        "runs on every seed")
    parser.add_argument("--hparam-seed", dest="hparam_seed", type=int, help="seed of the drawn configurations, independent of "
                        "the training seeds (default 0)")
    parser.add_argument("--selection", help="model-selection rule for the printed table (default: last); runs store every "
                        "checkpoint, so `leaderboard --selection` can apply another rule later without retraining")
    parser.add_argument("--executor", help="executor (default: local)")
    _add_store_args(parser)
    if out_dir:
        _add_out_dir(parser)
    parser.add_argument("--cache-dir", type=_path, help="where data and teachers are cached (env CDKD_BENCH_CACHE)")
    parser.add_argument("--data-root", type=_path, help="where real datasets live (env CDKD_BENCH_DATA)")
    parser.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("--threads", help="CPU threads per run (env CDKD_BENCH_THREADS; default: 1); "
                        "part of each run's identity, since results depend on it")
    parser.add_argument("--workers", help="runs at once on this machine (env CDKD_BENCH_WORKERS; default: the CPU cores "
                        "divided by --threads, 1 on a GPU); results do not depend on it")
    parser.add_argument("--runs-per-device", help="on GPUs: runs sharing each device at once, one worker per slot spread "
                        "over every GPU (default 1); for runs too small to fill a GPU. Results do not depend on it")
    parser.add_argument("--compile", action="store_true", default=None,
                        help="capture each training step with torch.compile (CUDA graphs on a GPU); part of the runs' numerics")
    parser.add_argument("--vmap-seeds", action="store_true", default=None,
                        help="train the seeds of each configuration as one vmapped ensemble (fast on a GPU; recipes whose "
                        "components read plain outputs only); part of the runs' numerics")
    parser.add_argument("--no-augmentation-parity", dest="augmentation_parity", action="store_false", default=None,
                        help="train students on plain source images while the teacher saw augmented ones (an ablation; "
                        "the tables say so)")


def _add_store_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", type=_path, help=f"SQLite results file (default: {DEFAULT_STORE})")


def _add_out_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out-dir", type=_path, default=Path("leaderboards"),
                        help="where leaderboard pages are written (default: leaderboards)")


class _OneLine(logging.Handler):
    """Library notes and warnings (cache rebuilt, repeated entries, …) as one stderr line each."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm.auto import tqdm

        prefix = "cdkd-bench: warning: " if record.levelno >= logging.WARNING else "cdkd-bench: "
        tqdm.write(prefix + record.getMessage(), file=sys.stderr)


def cmd_list(args: argparse.Namespace) -> int:
    from cdkd_bench.plugins import load_host

    kinds = [args.kind] if args.kind else [k for k in LIST_KINDS if k != "archs"]
    host = load_host(families=("suite",) if set(kinds) <= LISTED_FROM_SUITES and not args.markdown else None)
    if args.markdown:
        if args.kind != "methods":
            raise UserError("--markdown goes with `cdkd-bench list methods`")
        from cdkd_bench.method_table import methods_markdown

        print(methods_markdown(host), end="")
        _warn_failed_plugins(host)
        return 0
    for kind in kinds:
        print(f"{kind}:")
        if kind == "suites":
            for suite in host.suites:
                if _match(suite.name, args.filter):
                    print(f"  {suite.name:<28} {suite.value.description}  [{suite.plugin} {suite.plugin_version}]")
        elif kind == "tasks":
            for suite in host.suites:
                for task in suite.value.tasks:
                    if _match(task.name, args.filter):
                        print(f"  {task.name:<40} {task.source} → {task.target}  [{suite.plugin} {suite.plugin_version}]")
        elif kind == "methods":
            for method in host.methods:
                if _match(method.name, args.filter):
                    cls = method.value
                    print(f"  {method.name:<16} v{cls.version} {cls.family:<12} {cls.describe()}  [{method.plugin} {method.plugin_version}]")
        elif kind == "archs":
            for plugin, version, names in host.architecture_names_by_plugin():
                shown = [n for n in names if _match(n, args.filter)]
                print(f"  [{plugin} {version}] {len(shown)} of {len(names)} names")
                for name in shown:
                    print(f"    {name}")
    _warn_failed_plugins(host)
    return 0


def _match(name: str, pattern: str) -> bool:
    import fnmatch

    return fnmatch.fnmatchcase(name, pattern)


def _warn_failed_plugins(host: Any) -> None:
    for info in host.failed_plugins:
        print(f"cdkd-bench: warning: plugin {info.describe()} failed to load and was skipped: {info.error}", file=sys.stderr)


def cmd_plugins(args: argparse.Namespace) -> int:
    if getattr(args, "plugins_command", None) == "check":
        return _check_plugins(args.name)
    from cdkd_bench.plugins import DISABLE_ENV, disabled_plugins, load_host

    # No family needed: the plugin index lists the plugins it vouches for (their lister
    # answered when they were recorded); the others are imported and checked as always.
    host = load_host(families=())
    host.architecture_names()  # a broken architecture lister shows up here too
    for info in host.plugins:
        state = f"SKIPPED: {info.error}" if info.error else "loaded"
        print(f"  {info.name:<16} {info.distribution or '-'} {info.version or '-':<8} {state}")
        if not info.error:
            hooks = host.hooks_of(info.name)
            provided = "; ".join(f"{family}: {', '.join(names)}" for family, names in sorted(host.provided_by(info.name).items()))
            print(f"  {'':<16} hooks: {', '.join(hooks) or '-'}" + (f"; provides {provided}" if provided else ""))
    for name in sorted(disabled_plugins()):
        print(f"  {name:<16} disabled by {DISABLE_ENV}")
    return 0


def _check_plugins(name: str | None) -> int:
    from cdkd_bench.plugin_checks import check_installed_plugins

    results = check_installed_plugins(name)
    for plugin, what, problem in results:
        if problem is None:
            print(f"  ok      {plugin}: {what}")
        else:
            print(f"  FAILED  {plugin}: {what}: {problem}")
    failed = sum(problem is not None for _, _, problem in results)
    print(f"{len(results) - failed} of {len(results)} checks passed")
    return 1 if failed else 0


_RUN_FLAGS = ("suite", "tasks", "teacher", "student", "recipes", "teacher_recipe", "seeds", "budget", "selection", "executor", "store", "device",
              "label_regime", "trials", "hparam_seed", "compile", "vmap_seeds", "augmentation_parity", "teacher_weights", "student_weights")


def _request_from(args: argparse.Namespace) -> Any:
    """The grid file's keys, overridden by the flags given; every value checked, before any work."""
    from cdkd_bench.compute import THREADS_ENV, parse_threads
    from cdkd_bench.hparams import parse_assignments
    from cdkd_bench.request import GridRequest, check_value, read_grid_file

    fields: dict[str, Any] = read_grid_file(args.grid) if args.grid else {}
    for key in _RUN_FLAGS:
        value = getattr(args, key)
        if value is not None:
            value = str(value) if key in ("store", "teacher_weights", "student_weights") else value
            check_value(f"--{key}", key, value)
            fields[key] = value
    if args.hparams:
        fields["hparams"] = {**fields.get("hparams", {}), **parse_assignments(args.hparams)}
    if args.threads is not None:
        fields["threads"] = parse_threads(args.threads, "--threads")
    elif "threads" not in fields and os.environ.get(THREADS_ENV) is not None:
        fields["threads"] = parse_threads(os.environ[THREADS_ENV], f"the environment variable {THREADS_ENV}")
    return GridRequest(**fields)


def _worker_counts(args: argparse.Namespace, device: str) -> tuple[int | None, int]:
    """``--workers`` and ``--runs-per-device``, checked: the second packs runs on GPUs, so it needs one."""
    from cdkd_bench.compute import parse_count, pick_device

    workers = parse_count(args.workers, "--workers", "worker processes") if args.workers is not None else None
    if args.runs_per_device is None:
        return workers, 1
    per_device = parse_count(args.runs_per_device, "--runs-per-device", "runs per device")
    if workers is not None:
        raise UserError("give --workers or --runs-per-device, not both (--runs-per-device sets the workers: that many per GPU)")
    if pick_device(device).type != "cuda":
        raise UserError("--runs-per-device packs several runs on each GPU, and this grid runs on the CPU; "
                        "use --workers to run several at once")
    return None, per_device


def _weights_file(value: str | None, flag: str) -> Path | None:
    """A weights file the user named, made absolute (workers may run elsewhere) and checked to exist."""
    if value is None:
        return None
    path = Path(value).expanduser().resolve()
    if not path.is_file():
        raise UserError(f"{flag} names {value!r}, which is not a file")
    return path


def cmd_run(args: argparse.Namespace) -> int:
    from cdkd_bench.compute import default_threads, use_threads
    from cdkd_bench.data import default_cache_dir, default_data_root
    from cdkd_bench.engine import EngineSettings
    from cdkd_bench.folders import writable_folder
    from cdkd_bench.grid import expand
    from cdkd_bench.leaderboard import write_leaderboard
    from cdkd_bench.plugins import load_host
    from cdkd_bench.search import run_searched_grid
    from cdkd_bench.store import Store

    request = _request_from(args)
    if args.ray_address is not None:
        os.environ["CDKD_BENCH_RAY_ADDRESS"] = args.ray_address  # read by the ray executor, here and in what it starts
    host = load_host()
    _warn_failed_plugins(host)
    suite = request.suite or host.default("suite")
    threads = request.threads or default_threads()
    workers, runs_per_device = _worker_counts(args, request.device)
    settings = EngineSettings(
        cache_dir=writable_folder(args.cache_dir or default_cache_dir(), "the cache", "--cache-dir (or CDKD_BENCH_CACHE)"),
        data_root=args.data_root or default_data_root(),
        device=request.device,
        threads=threads,
        workers=workers,
        runs_per_device=runs_per_device,
        compile=request.compile,
        vmap_seeds=request.vmap_seeds,
        show_progress=not args.no_progress,
        command=args.command_line,
        teacher_weights=_weights_file(request.teacher_weights, "--teacher-weights"),
        student_weights=_weights_file(request.student_weights, "--student-weights"),
    )
    settings.resolved_workers()  # a bad CDKD_BENCH_WORKERS is said now, before any work
    writable_folder(args.out_dir, "leaderboard pages", "--out-dir")
    specs = expand(host, request, settings.cache_dir, settings.data_root)
    store = Store(Path(request.store))
    import torch

    use_threads(torch.device("cpu"), threads)
    host.executors.get(request.executor or host.default("executor"))().check()  # an unreachable cluster is said now
    planned = f"{len(specs)} runs" if request.trials <= 1 else f"an hparam search over {len(specs)} runs' configurations"
    print(f"grid: {planned} on suite {suite!r}; results in {request.store}", file=sys.stderr)
    summary = run_searched_grid(host, request, specs, store, settings, show_progress=not args.no_progress,
                                retry_failed=args.retry_failed)
    elsewhere = f", {summary.elsewhere} left to another process" if summary.elsewhere else ""
    before = f", {summary.failed_before} failed before and left alone (--retry-failed runs them)" if summary.failed_before else ""
    print(
        f"grid: {summary.done} done, {summary.failed} failed, {summary.skipped} already done{elsewhere}{before}; "
        f"{summary.teachers_trained} teachers trained",
        file=sys.stderr,
    )
    path, text = write_leaderboard(store, suite, args.out_dir, host, request.selection)
    print(text)
    print(f"leaderboard written to {path}", file=sys.stderr)
    return 1 if summary.failed or summary.failed_before else 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from cdkd_bench.bundles import open_results
    from cdkd_bench.leaderboard import check_suite_name, write_leaderboard_files
    from cdkd_bench.plugins import load_host

    host = load_host(families=LEADERBOARD_FAMILIES)
    _warn_failed_plugins(host)
    if args.selection is not None:
        host.selectors.get(args.selection)  # unknown rule → suggestions
    inputs = [*(args.stores or ([] if args.bundles else [Path(DEFAULT_STORE)])), *(args.bundles or [])]
    store = open_results(inputs, host)
    suite = args.suite if args.suite is not None else host.default("suite")
    check_suite_name(suite, store, host)
    if not store.runs(suite=suite, status=None):
        held = ", ".join(store.suites()) or "none"
        raise UserError(f"no results of suite {suite!r} in {', '.join(map(str, inputs))} (suites there: {held}); "
                        "run a grid first or name another --suite")
    paths, text = write_leaderboard_files(store, suite, args.out_dir, host, args.selection, args.formats)
    print(text)
    print(f"leaderboard written to {', '.join(map(str, paths))}", file=sys.stderr)
    return 0


def cmd_forget(args: argparse.Namespace) -> int:
    from cdkd_bench.store import Store

    store_path = args.store or Path(DEFAULT_STORE)
    if not store_path.exists():
        raise UserError(f"results store {str(store_path)!r} does not exist; pass --store")
    store = Store(store_path)
    wanted = list(dict.fromkeys(args.run_ids))
    stored = {run.run_id for run in store.runs(status=None)}
    missing = [r for r in wanted if r not in stored]
    if missing:  # all or nothing: a typo in one id forgets none
        raise UserError(f"no run with id {', '.join(repr(m) for m in missing)} in {str(store_path)!r}; nothing was forgotten")
    store.forget(wanted)
    print(f"forgot {len(wanted)} run(s); the next grid that includes them runs them again", file=sys.stderr)
    return 0


def _grid_flags_given(args: argparse.Namespace) -> bool:
    """Whether the flags name a grid (anything `run` would read besides the store): then `status` expands it."""
    named = any(getattr(args, key) is not None for key in _RUN_FLAGS if key != "store")
    return named or args.grid is not None or bool(args.hparams) or args.threads is not None


def cmd_status(args: argparse.Namespace) -> int:
    from cdkd_bench.status import collect, estimate, open_store, render_status

    if not _grid_flags_given(args):  # the store alone: no plugins, no torch
        given = [flag for flag, value in (("--workers", args.workers), ("--runs-per-device", args.runs_per_device),
                                          ("--cache-dir", args.cache_dir),
                                          ("--data-root", args.data_root)) if value is not None]
        if given:
            verb = "matter" if len(given) > 1 else "matters"
            raise UserError(f"{' and '.join(given)} {verb} only with a grid: add grid flags (--grid, --suite, --tasks, --seeds, …) "
                            "to see its pending runs and an ETA")
        print(render_status(collect(open_store(args.store or Path(DEFAULT_STORE)))), end="")
        return 0

    from cdkd_bench.compute import default_threads
    from cdkd_bench.data import default_cache_dir, default_data_root
    from cdkd_bench.folders import writable_folder
    from cdkd_bench.plan import expand
    from cdkd_bench.plugins import load_host
    from cdkd_bench.settings import EngineSettings

    request = _request_from(args)
    store = open_store(Path(request.store))  # before any expansion: a missing store is said at once
    host = load_host()
    _warn_failed_plugins(host)
    counts = _worker_counts(args, request.device)
    settings = EngineSettings(
        cache_dir=writable_folder(args.cache_dir or default_cache_dir(), "the cache", "--cache-dir (or CDKD_BENCH_CACHE)"),
        data_root=args.data_root or default_data_root(),
        device=request.device,
        threads=request.threads or default_threads(),
        workers=counts[0],
        runs_per_device=counts[1],
    )
    workers = settings.resolved_workers()  # as `run` would use them
    specs = expand(host, request, settings.cache_dir, settings.data_root)
    status = collect(store, specs)
    print(render_status(status, estimate(status.pending, store.summaries(), workers, failed=status.total("failed"))), end="")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from cdkd_bench.status import find_run, open_store, render_run

    store = open_store(args.store or Path(DEFAULT_STORE))
    if args.runs_command == "show":
        print(render_run(*find_run(store, args.run_id, MIN_RUN_PREFIX)), end="")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from cdkd_bench.data_commands import check_domain, domain_state, prepare_domain, render_states
    from cdkd_bench.locations import default_cache_dir, default_data_root
    from cdkd_bench.plugins import load_host

    host = load_host()
    _warn_failed_plugins(host)
    cache_dir, data_root = args.cache_dir or default_cache_dir(), args.data_root or default_data_root()
    if args.data_command == "list":
        suites = [host.suite(args.suite)] if args.suite else [host.suite(e.name) for e in host.suites]
        print(render_states([domain_state(s, host.domains.get(d), cache_dir, data_root) for s in suites for d in s.domains]), end="")
        return 0
    suite = host.suite(args.suite)
    if args.data_command == "prepare":
        for name in suite.domains:
            prepare_domain(suite, host.domains.get(name), cache_dir, data_root)
            print(f"{name}: ready")
        return 0
    failed = 0
    for name in suite.domains:
        problems = check_domain(suite, host.domains.get(name), cache_dir, data_root)
        print(f"{name}: {'ok' if not problems else 'problem'}")
        for problem in problems:
            print(f"cdkd-bench: error: {problem}", file=sys.stderr)
        failed += bool(problems)
    if failed:
        print(f"cdkd-bench: {failed} of {len(suite.domains)} domains of {suite.name} have problems (above)", file=sys.stderr)
        return 2
    return 0


def cmd_new(args: argparse.Namespace) -> int:
    from cdkd_bench.scaffold import write_method_package, write_suite_package

    write = write_method_package if args.kind == "method" else write_suite_package
    folder = write(args.name, args.dir)
    print(f"wrote {folder}; next: pip install -e {folder} && python -m pytest {folder} (see its README.md)")
    return 0


COMMANDS = {"list": cmd_list, "plugins": cmd_plugins, "run": cmd_run, "leaderboard": cmd_leaderboard, "forget": cmd_forget,
            "status": cmd_status, "runs": cmd_runs, "data": cmd_data, "new": cmd_new,
            "export": lambda args: _bundle_command("cmd_export", args), "verify": lambda args: _bundle_command("cmd_verify", args)}


def _bundle_command(name: str, args: argparse.Namespace) -> int:
    """Bundle commands live in their own module, imported only when one of them runs."""
    from cdkd_bench import bundle_commands

    return int(getattr(bundle_commands, name)(args))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.command_line = shlex.join(["cdkd-bench", *(sys.argv[1:] if argv is None else argv)])
    if args.command is None:
        print(f"cdkd-bench: error: name a command: {', '.join(COMMANDS)} (see `cdkd-bench --help`)", file=sys.stderr)
        return 2
    logger = logging.getLogger("cdkd_bench")
    handler, level = _OneLine(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        return COMMANDS[args.command](args)
    except UserError as exc:
        print(f"cdkd-bench: error: {exc}", file=sys.stderr)
        return 2
    except RegistrationError as exc:
        print(f"cdkd-bench: plugin error: {exc} (set CDKD_BENCH_DISABLE_PLUGINS to skip a plugin)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("cdkd-bench: interrupted; finished runs are kept and the next run resumes", file=sys.stderr)
        return 130
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


if __name__ == "__main__":
    sys.exit(main())
