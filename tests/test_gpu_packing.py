"""Several runs packed on one GPU (--runs-per-device) store the numbers of runs made one at a time."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import torch

from cdkd_bench.cli import main

GRID = ["run", "--budget", "smoke", "--tasks", "printed_to_handwritten", "--seeds", "0,1", "--recipes", "kd,dann",
        "--device", "cuda", "--no-progress"]


def _accuracies(store: Path) -> dict[str, float]:
    with sqlite3.connect(store) as db:
        return {run_id: json.loads(metrics)["target_test.acc"] for run_id, metrics in db.execute("SELECT run_id, metrics FROM runs")}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_packed_on_a_gpu_give_the_numbers_of_runs_one_at_a_time(cache_dir: Path, tmp_path: Path) -> None:
    assert main([*GRID, "--runs-per-device", "1", "--store", str(tmp_path / "one.sqlite"), "--out-dir", str(tmp_path / "one")]) == 0
    assert main([*GRID, "--runs-per-device", "3", "--store", str(tmp_path / "packed.sqlite"), "--out-dir", str(tmp_path / "packed")]) == 0
    one, packed = _accuracies(tmp_path / "one.sqlite"), _accuracies(tmp_path / "packed.sqlite")
    assert len(one) == 8 and one == packed
