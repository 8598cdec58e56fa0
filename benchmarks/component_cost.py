"""Per-step cost of every method component relative to `kd`, in one process (`python benchmarks/component_cost.py`).

Each recipe trains the default embedded student for a few steps on printed → handwritten
with the default teacher, through the engine's own loop; recipes are interleaved round by
round and each gets its median over rounds, so machine noise hits them alike. The output is
a Markdown table of milliseconds per step and the ratio to `kd`. One CPU thread, unless
``--threads`` says otherwise.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from cdkd_bench.api import MethodInfo
from cdkd_bench.data import Split, load_domain, to_input, validation_split
from cdkd_bench.engine import build_components
from cdkd_bench.networks import network_info
from cdkd_bench.plan import expand
from cdkd_bench.plugins import load_host
from cdkd_bench.request import GridRequest
from cdkd_bench.training import fit

RECIPES = ("source_only", "kd", "fitnet", "at", "sp", "pkt", "rkd", "crd", "dkd", "dist", "lskd", "nkd",
           "fitnet+kd", "at+kd", "sp+kd", "pkt+kd", "rkd+kd", "crd+kd")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="steps per timed run (the teacher table is amortised over them)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    host = load_host()
    suite = host.suites.get("embedded")
    device = torch.device("cpu")
    with tempfile.TemporaryDirectory() as cache:
        source = load_domain(host.domains.get("embedded.printed"), 32, Path(cache), None)
        target = load_domain(host.domains.get("embedded.handwritten"), 32, Path(cache), None)
    train_idx, _ = validation_split(source.train_y, "embedded.printed")
    source_split = Split(to_input(source.train_x[train_idx]), source.train_y[train_idx])
    target_split = Split(to_input(target.train_x), target.train_y)
    specs = {frozenset(s.components): s for s in expand(host, GridRequest(tasks=("printed_to_handwritten",), recipes=RECIPES, seeds=(0,),
                                                               budget="quick", threads=args.threads, device="cpu"))}
    torch.manual_seed(0)
    teacher = host.architecture(suite.default_teacher, 10).eval().requires_grad_(False)
    times: dict[str, list[float]] = {recipe: [] for recipe in RECIPES}
    for _ in range(args.rounds):
        for recipe in RECIPES:
            spec = specs[frozenset(recipe.split("+"))]
            torch.manual_seed(1)
            student = host.architecture(spec.student_arch, 10)
            info = MethodInfo(10, 64, 128, args.steps, network_info(student, spec.student_arch, 32, device),
                              network_info(teacher, spec.teacher.arch, 32, device),
                              {"source": len(source_split), "target": len(target_split)}, 32)
            components = build_components(host, spec, info, device)
            started = time.perf_counter()
            fit(student, components, source_split, target_split if any(c.uses_target for c in components) else None,
                steps=args.steps, batch_size=spec.batch_size, lr=spec.lr, weight_decay=spec.weight_decay, seed=0,
                teacher=teacher if any(c.needs_teacher for c in components) else None)
            times[recipe].append((time.perf_counter() - started) / args.steps * 1000)
    kd = statistics.median(times["kd"])
    print(f"| recipe | ms/step (median of {args.rounds}) | spread (min–max) | ratio to kd |")
    print("|---|---:|---:|---:|")
    for recipe in RECIPES:
        median = statistics.median(times[recipe])
        print(f"| {recipe} | {median:.1f} | {min(times[recipe]):.1f}–{max(times[recipe]):.1f} | {median / kd:.2f} |")


if __name__ == "__main__":
    main()
