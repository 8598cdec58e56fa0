"""Wall time of the commands that do not train, against `python -c 'import torch'`.

    python benchmarks/startup_time.py --store RESULTS.sqlite [--rounds 5]

Uses the `cdkd-bench` beside this interpreter and the cache named by CDKD_BENCH_CACHE (run a
grid or `cdkd-bench plugins` once first, so the plugin index exists). One warm-up of every
command, then rounds that run the commands in turn; prints a Markdown table of medians.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, required=True, help="a results store for `leaderboard` to read")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    cli = str(Path(sys.executable).with_name("cdkd-bench"))
    with tempfile.TemporaryDirectory() as out:
        commands = {
            "python -c 'import torch'": [sys.executable, "-c", "import torch"],
            "cdkd-bench --help": [cli, "--help"],
            "cdkd-bench leaderboard": [cli, "leaderboard", "--store", str(args.store), "--out-dir", out],
            "cdkd-bench list suites": [cli, "list", "suites"],
            "cdkd-bench plugins": [cli, "plugins"],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for command in commands.values():  # warm-up: files in the page cache, the plugin index written
            subprocess.run(command, capture_output=True, check=True)
        for _ in range(args.rounds):
            for name, command in commands.items():
                started = time.perf_counter()
                subprocess.run(command, capture_output=True, check=True)
                times[name].append(time.perf_counter() - started)
    base = statistics.median(times["python -c 'import torch'"])
    print("| command | median | min–max | ratio to `import torch` |\n|---|---:|---:|---:|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| `{name}` | {median:.3f} s | {min(values):.3f}–{max(values):.3f} s | {median / base:.3f} |")


if __name__ == "__main__":
    main()
