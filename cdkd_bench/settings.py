"""Where runs keep their caches and what they compute on: settings that are not part of a run's identity."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cdkd_bench.compute import default_threads, default_workers


@dataclass(frozen=True)
class EngineSettings:
    """Plain data, so a job (spec + settings) can be sent to another process as it is."""

    cache_dir: Path
    data_root: Path | None = None
    device: str = "auto"
    threads: int | None = None
    """CPU threads per run; None: ``CDKD_BENCH_THREADS`` or 1 (see compute.default_threads)."""
    workers: int | None = None
    """How many jobs an executor may run at once on this machine; None: ``CDKD_BENCH_WORKERS``, else
    the cores divided by ``threads`` on the CPU, 1 on a GPU (see compute.default_workers)."""
    runs_per_device: int = 1
    """On GPUs, how many runs share each device (one worker process per slot, each pinned to one device)."""
    compile: bool = False
    """Capture each training step with torch.compile (see compute.numerics: part of identity)."""
    vmap_seeds: bool = False
    """Train the seeds of each configuration together as one vmapped ensemble (see cdkd_bench.ensemble)."""
    show_progress: bool = False
    teacher_weights: Path | None = None
    """Local weights files the pretrained teachers and students of the grid start from (their hashes are in the specs)."""
    student_weights: Path | None = None
    command: str = ""
    """The command line that started the grid, recorded in each run's provenance ("" when not from the CLI)."""

    def resolved_threads(self) -> int:
        return self.threads if self.threads is not None else default_threads()

    def resolved_workers(self) -> int:
        if self.workers is not None:
            return self.workers
        return default_workers(self.resolved_threads(), self.device, self.runs_per_device)
