"""The command line: cdkd-bench list | plugins | run | leaderboard."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cdkd_bench.errors import UserError
from cdkd_bench.registry import RegistrationError

LIST_KINDS = ("suites", "tasks", "methods", "archs")


def _comma_list(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


def _seed_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in _comma_list(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be comma-separated integers, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cdkd-bench",
        description="Benchmark cross-domain knowledge distillation: run grids, fill leaderboards.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p_list = sub.add_parser("list", help="list suites, tasks, methods or architectures and the plugins providing them")
    p_list.add_argument("kind", nargs="?", choices=LIST_KINDS, help="what to list (default: all but archs)")
    p_list.add_argument("--filter", default="*", help="glob on names, e.g. 'resnet*' (default: everything)")

    sub.add_parser("plugins", help="list loaded plugins, their versions, and any that failed to load")

    p_run = sub.add_parser("run", help="run a grid (no arguments: the embedded suite's default grid, quick budget)")
    p_run.add_argument("--grid", type=Path, help="TOML grid file; flags given here override its keys")
    p_run.add_argument("--suite", help="suite name (default: embedded)")
    p_run.add_argument("--tasks", type=_comma_list, help="comma-separated task names (default: all of the suite's)")
    p_run.add_argument("--teacher", help="teacher architecture (default: the suite's)")
    p_run.add_argument("--student", help="student architecture (default: the suite's)")
    p_run.add_argument("--recipes", type=_comma_list, help="comma-separated recipes, e.g. kd,kd+dann")
    p_run.add_argument("--seeds", type=_seed_list, help="comma-separated seeds (default: the suite's)")
    p_run.add_argument("--budget", help="budget name: quick, default, paper (default: the suite's)")
    p_run.add_argument("--set", dest="hparams", action="append", default=[], metavar="METHOD.HPARAM=VALUE",
                       help="override a hyper-parameter, e.g. --set kd.temperature=2 (repeatable)")
    p_run.add_argument("--selection", help="model-selection rule (default: last)")
    p_run.add_argument("--executor", help="executor (default: local)")
    _add_store_args(p_run)
    p_run.add_argument("--cache-dir", type=Path, help="where data and teachers are cached (env CDKD_BENCH_CACHE)")
    p_run.add_argument("--data-root", type=Path, help="where real datasets live (env CDKD_BENCH_DATA)")
    p_run.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    p_run.add_argument("--no-progress", action="store_true", help="no progress bars")

    p_board = sub.add_parser("leaderboard", help="render leaderboard tables from the results store")
    p_board.add_argument("--suite", default="embedded", help="suite name (default: embedded)")
    _add_store_args(p_board)
    return parser


def _add_store_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", help="SQLite results file (default: cdkd-results.sqlite)")
    parser.add_argument("--out-dir", type=Path, default=Path("leaderboards"),
                        help="where leaderboard pages are written (default: leaderboards)")


def _set_threads() -> None:
    import torch

    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(int(os.environ.get("CDKD_BENCH_THREADS", available)))


def cmd_list(args: argparse.Namespace) -> int:
    from cdkd_bench.plugins import load_host

    host = load_host()
    kinds = [args.kind] if args.kind else [k for k in LIST_KINDS if k != "archs"]
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
        print(f"cdkd-bench: warning: plugin {info.name!r} failed to load and was skipped: {info.error}", file=sys.stderr)


def cmd_plugins(args: argparse.Namespace) -> int:  # noqa: ARG001
    from cdkd_bench.plugins import DISABLE_ENV, disabled_plugins, load_host

    host = load_host()
    for info in host.plugins:
        state = f"FAILED: {info.error}" if info.error else "loaded"
        print(f"  {info.name:<16} {info.distribution or '-'} {info.version or '-':<8} {state}")
    for name in sorted(disabled_plugins()):
        print(f"  {name:<16} disabled by {DISABLE_ENV}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from cdkd_bench.data import default_cache_dir, default_data_root
    from cdkd_bench.engine import EngineSettings, pick_device
    from cdkd_bench.grid import GridRequest, expand, read_grid_file, run_grid
    from cdkd_bench.hparams import parse_assignments
    from cdkd_bench.leaderboard import write_leaderboard
    from cdkd_bench.plugins import load_host
    from cdkd_bench.store import Store

    fields: dict[str, Any] = read_grid_file(args.grid) if args.grid else {}
    for key in ("suite", "tasks", "teacher", "student", "recipes", "seeds", "budget", "selection", "executor", "store", "device"):
        value = getattr(args, key)
        if value is not None:
            fields[key] = value
    if args.hparams:
        fields["hparams"] = {**fields.get("hparams", {}), **parse_assignments(args.hparams)}
    request = GridRequest(**fields)

    host = load_host()
    _warn_failed_plugins(host)
    specs = expand(host, request)
    settings = EngineSettings(
        cache_dir=args.cache_dir or default_cache_dir(),
        data_root=args.data_root or default_data_root(),
        device=request.device,
        show_progress=not args.no_progress,
    )
    pick_device(settings.device)  # a bad --device is a user error before anything runs
    store = Store(Path(request.store))
    print(f"grid: {len(specs)} runs on suite {request.suite!r}; results in {request.store}", file=sys.stderr)
    summary = run_grid(host, specs, store, settings, request.executor, show_progress=not args.no_progress)
    print(
        f"grid: {summary.done} done, {summary.failed} failed, {summary.skipped} already done; "
        f"{summary.teachers_trained} teachers trained",
        file=sys.stderr,
    )
    path, text = write_leaderboard(store, request.suite, args.out_dir, host)
    print(text)
    print(f"leaderboard written to {path}", file=sys.stderr)
    return 1 if summary.failed else 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from cdkd_bench.leaderboard import write_leaderboard
    from cdkd_bench.plugins import load_host
    from cdkd_bench.store import Store

    store_path = Path(args.store or "cdkd-results.sqlite")
    if not store_path.exists():
        raise UserError(f"results store {str(store_path)!r} does not exist; run `cdkd-bench run` first or pass --store")
    host = load_host()
    path, text = write_leaderboard(Store(store_path), args.suite, args.out_dir, host)
    print(text)
    print(f"leaderboard written to {path}", file=sys.stderr)
    return 0


COMMANDS = {"list": cmd_list, "plugins": cmd_plugins, "run": cmd_run, "leaderboard": cmd_leaderboard}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        _set_threads()
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


if __name__ == "__main__":
    sys.exit(main())
