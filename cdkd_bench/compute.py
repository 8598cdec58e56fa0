"""What a run computes on: the device, the CPU thread count, and the numerics they imply.

CPU kernels split their reductions across threads, so the same run with 1 and 2 threads
ends with different weights. The thread count on the CPU (and bf16 autocast on CUDA) is
therefore part of what identifies a run and a teacher: see ``numerics``.
"""

from __future__ import annotations

import os
import re

import torch

from cdkd_bench.errors import UserError

THREADS_ENV = "CDKD_BENCH_THREADS"
WORKERS_ENV = "CDKD_BENCH_WORKERS"
DEFAULT_THREADS = 1
"""One thread per run: small networks gain little from a second thread (1.33x for 1.45x the CPU,
and many times slower when the cores are busy), so the cores go to concurrent runs instead,
and a run's numbers do not depend on how many cores the machine has."""
_DEVICE_PATTERN = re.compile(r"(auto|cpu|cuda|cuda:\d+)")


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def parse_count(text: str, source: str, what: str = "CPU threads") -> int:
    """A thread or worker count given by the user (a flag or the environment), checked."""
    try:
        count = int(text.strip())
    except ValueError:
        raise UserError(f"{source} must be a whole number of {what}, got {text!r}") from None
    if not 1 <= count <= 1024:
        raise UserError(f"{source} must be between 1 and 1024 {what}, got {count}")
    return count


def parse_threads(text: str, source: str) -> int:
    return parse_count(text, source, "CPU threads")


def default_threads() -> int:
    """``CDKD_BENCH_THREADS`` if set, else one thread per run."""
    value = os.environ.get(THREADS_ENV)
    return parse_threads(value, f"the environment variable {THREADS_ENV}") if value is not None else DEFAULT_THREADS


def default_workers(threads: int, device: str, runs_per_device: int = 1) -> int:
    """``CDKD_BENCH_WORKERS`` if set, else on the CPU as many concurrent runs as the cores hold at
    ``threads`` each; on GPUs ``runs_per_device`` per device (one on a named device ``cuda:N``)."""
    value = os.environ.get(WORKERS_ENV)
    if value is not None:
        return parse_count(value, f"the environment variable {WORKERS_ENV}", "worker processes")
    if device.startswith("cuda:"):
        return runs_per_device
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        return torch.cuda.device_count() * runs_per_device
    return max(1, available_cores() // threads)


def worker_device(slot: int, device: str) -> int | None:
    """The GPU a worker in ``slot`` is pinned to (runs spread over every device), or None: no pinning
    on the CPU, on a named device, or with a single GPU."""
    if device not in ("auto", "cuda") or not torch.cuda.is_available() or torch.cuda.device_count() < 2:
        return None
    return slot % torch.cuda.device_count()


def pick_device(name: str) -> torch.device:
    """``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``; anything else is a user error."""
    if not _DEVICE_PATTERN.fullmatch(name):
        raise UserError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"device {name!r} was asked for but no CUDA device is available; use --device cpu or auto")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise UserError(f"device {name!r} does not exist; this machine has {torch.cuda.device_count()} CUDA device(s)")
    return torch.device(name)


COMPILE_BACKEND_ENV = "CDKD_BENCH_COMPILE_BACKEND"


def compile_backend() -> str:
    """torch.compile's backend for ``--compile``: ``inductor`` unless ``CDKD_BENCH_COMPILE_BACKEND`` names
    another (``aot_eager`` checks graph capture and autograd without generating code)."""
    return os.environ.get(COMPILE_BACKEND_ENV, "").strip() or "inductor"


def numerics(device: torch.device, threads: int, compiled: bool = False, vmapped: bool = False) -> str:
    """What decides a run's floating-point results besides its spec; part of run and teacher identity."""
    base = "cuda bf16-autocast" if device.type == "cuda" else f"cpu fp32 {threads} thread{'s' if threads > 1 else ''}"
    if vmapped:  # batched kernels sum in another order than one member's would
        base += ", seeds vmapped"
    if not compiled:
        return base
    # Generated kernels fuse and reorder arithmetic: compiled runs are their own numerics.
    backend = compile_backend()
    mode = ", CUDA graphs" if device.type == "cuda" and backend == "inductor" else ""
    return f"{base}, compiled ({backend}{mode})"


def use_threads(device: torch.device, threads: int) -> None:
    """Give torch exactly ``threads`` intra-op threads for CPU work."""
    if device.type == "cpu" and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def check_numerics(planned: str, device: torch.device, threads: int, compiled: bool = False, vmapped: bool = False) -> None:
    """Refuse to compute a run or teacher with other numerics than its identity says, then set the threads."""
    actual = numerics(device, threads, compiled, vmapped)
    if actual != planned:
        raise UserError(f"this work was planned for {planned!r} but would run as {actual!r}; run the grid again with matching settings")
    use_threads(device, threads)


def make_deterministic() -> None:
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
