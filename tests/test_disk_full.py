"""A disk that fills up while a teacher is saved fails that teacher's runs with a sentence; no half-written
file is ever loaded, and the next grid trains the teacher again."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch

from cdkd_bench.engine import EngineSettings
from cdkd_bench.grid import GridRequest, expand, run_grid
from cdkd_bench.store import Store
from cdkd_bench.teachers import teacher_path


def test_a_full_disk_while_saving_a_teacher_fails_its_runs_and_leaves_nothing_half_written(
    host, cache_dir: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    specs = expand(host, GridRequest(tasks=("printed_to_handwritten",), recipes=("kd",), seeds=(0,), budget="smoke"), cache_dir)
    settings = EngineSettings(cache_dir=cache_dir, device="cpu", workers=1)  # in this process, where the disk is "full"
    store = Store(cache_dir.parent / "results.sqlite")
    real_save = torch.save

    def save_until_the_disk_is_full(obj, target, *args, **kwargs):  # type: ignore[no-untyped-def]
        if "teachers" in str(target):
            Path(target).write_bytes(b"PK\x03\x04 half a teacher")  # some bytes made it to disk
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, target, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_until_the_disk_is_full)
    messages: list[str] = []
    summary = run_grid(host, specs, store, settings, show_progress=False, log=messages.append)
    assert summary.failed == len(specs) and summary.done == 0
    assert any("No space left on device" in m for m in messages)
    path = teacher_path(settings, specs[0].teacher)
    assert not path.exists() and not list(path.parent.glob(f".{path.name}.*"))  # neither the file nor its temporary

    monkeypatch.setattr(torch, "save", real_save)
    again = run_grid(host, specs, store, settings, show_progress=False, log=lambda _: None, retry_failed=True)
    assert again.done == len(specs) and again.teachers_trained == 1 and path.exists()
