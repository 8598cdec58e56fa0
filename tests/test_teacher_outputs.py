"""The teacher's plain outputs per (teacher, domain split): computed once, shared, verified."""

from __future__ import annotations

import logging

import torch

from cdkd_bench.engine import EngineSettings, execute
from cdkd_bench.grid import GridRequest, expand


def _kd_and_oracle(host, task="handwritten_to_printed", parity=False):
    """Parity off and a target with a test split: the teacher's outputs on all three kinds of split are tables."""
    specs = expand(host, GridRequest(tasks=(task,), recipes=("kd",), seeds=(0,), budget="smoke", device="cpu",
                                     augmentation_parity=parity))
    return next(s for s in specs if s.recipe == "kd"), next(s for s in specs if s.recipe == "target_oracle")


def test_under_parity_source_outputs_are_computed_per_step_and_a_transductive_target_has_one_table(host, cache_dir) -> None:
    kd, _ = _kd_and_oracle(host, "printed_to_handwritten", parity=True)
    execute(kd, host, EngineSettings(cache_dir=cache_dir, device="cpu"))
    names = sorted(p.name for p in (cache_dir / "teachers").glob(f"{kd.teacher.key}-outputs-*.pt"))
    assert names == [f"{kd.teacher.key}-outputs-embedded.handwritten-all.pt"]


def test_outputs_are_computed_once_per_split_and_give_the_numbers_computing_them_gives(host, cache_dir) -> None:
    settings = EngineSettings(cache_dir=cache_dir, device="cpu")
    kd, oracle = _kd_and_oracle(host)
    first = execute(kd, host, settings)
    key = kd.teacher.key
    names = sorted(p.name for p in (cache_dir / "teachers").glob(f"{key}-outputs-*.pt"))
    assert names == [f"{key}-outputs-embedded.handwritten-source_train.pt", f"{key}-outputs-embedded.printed-test.pt",
                     f"{key}-outputs-embedded.printed-train.pt"]
    stamps = {name: (cache_dir / "teachers" / name).stat().st_mtime_ns for name in names}
    # target_oracle does not read the teacher in training, but reports its agreement on target test: read, not recomputed.
    execute(oracle, host, settings)
    second = execute(kd, host, settings)
    assert {name: (cache_dir / "teachers" / name).stat().st_mtime_ns for name in names} == stamps
    assert second["metrics"] == first["metrics"]


def test_a_damaged_outputs_file_is_said_once_and_computed_again_identically(host, cache_dir, caplog) -> None:
    settings = EngineSettings(cache_dir=cache_dir, device="cpu")
    kd, _ = _kd_and_oracle(host)
    first = execute(kd, host, settings)
    path = cache_dir / "teachers" / f"{kd.teacher.key}-outputs-embedded.handwritten-source_train.pt"
    intact = torch.load(path, weights_only=True)
    damaged = {**intact, "tensors": {**intact["tensors"], "logits": intact["tensors"]["logits"].flip(0)}}
    torch.save(damaged, path)
    with caplog.at_level(logging.WARNING, logger="cdkd_bench"):
        again = execute(kd, host, settings)
    warnings = [r.getMessage() for r in caplog.records if "outputs-embedded.handwritten-source_train" in r.getMessage()]
    assert len(warnings) == 1 and "does not match its recorded content hash" in warnings[0]
    assert again["metrics"] == first["metrics"]
    rebuilt = torch.load(path, weights_only=True)["tensors"]
    assert all(torch.equal(rebuilt[name], intact["tensors"][name]) for name in ("logits", "features"))
