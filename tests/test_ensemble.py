"""Vmapped seeds: each member trains as a run of its own seed would, and the grid records each member."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import torch

from cdkd_bench.cli import main
from cdkd_bench.data import BatchStream
from cdkd_bench.engine import EngineSettings, _prepare, source_augmenter
from cdkd_bench.ensemble import fit_ensemble
from cdkd_bench.grid import GridRequest, expand
from cdkd_bench.spec import derive_seed
from cdkd_bench.task_data import load_task_data
from cdkd_bench.training import fit

STEPS = 6


def _prepared_pair(host, cache_dir, recipe, parity=True):
    specs = [s for s in expand(host, GridRequest(tasks=("printed_to_handwritten",), recipes=(recipe,), seeds=(0, 1), budget="smoke",
                                                 device="cpu", threads=1, augmentation_parity=parity)) if s.recipe == recipe]
    settings = EngineSettings(cache_dir=cache_dir, device="cpu", threads=1)
    cpu = torch.device("cpu")
    data = load_task_data(host, specs[0], settings, cpu)

    def prepare():
        runs = []
        for spec in specs:
            torch.manual_seed(derive_seed(spec.seed, "run"))
            runs.append(_prepare(spec, host, settings, cpu, data))
        return runs

    return specs, data, prepare


@pytest.mark.parametrize("recipe", ["kd", "source_only", pytest.param("dkd", marks=pytest.mark.slow)])  # dkd: slow env (time)
@pytest.mark.parametrize("parity", [False, True], ids=["plain", "parity"])
def test_each_member_ends_with_the_weights_and_statistics_a_run_of_its_own_seed_ends_with(host, cache_dir, recipe, parity) -> None:
    specs, data, prepare = _prepared_pair(host, cache_dir, recipe, parity)
    alone = prepare()
    target = data.target_train if alone[0].uses_target else None
    # Under augmentation parity each member's source batches are augmented with its own draws, and its teacher runs on
    # them. Augmented inputs are not on the 8-bit grid, and rounding differences of batched kernels (1e-8 after one step)
    # then grow through AdamW's first steps (1e-6 after two, 1e-3 after six, measured), so parity is compared after two
    # steps, which still covers a second batch and its own augmentation draw.
    steps = 2 if parity else STEPS
    losses_alone = [
        fit(run.student, run.components, data.source_train, target, steps=steps, batch_size=32, lr=1e-2, weight_decay=5e-4,
            seed=derive_seed(spec.seed, "student-batches"), teacher=run.teacher if run.tables is not None else None,
            teacher_tables=run.tables, augment=source_augmenter(spec))
        for run, spec in zip(alone, specs, strict=True)
    ]
    together = prepare()
    losses_together = fit_ensemble(
        [r.student for r in together], [r.components for r in together], data.source_train, target, steps=steps, batch_size=32,
        lr=1e-2, weight_decay=5e-4, seeds=[derive_seed(s.seed, "student-batches") for s in specs], teacher_tables=[r.tables for r in together],
        augments=[source_augmenter(s) for s in specs], teachers=[r.teacher if r.tables is not None else None for r in together])
    for one, other in zip(alone, together, strict=True):
        reference = one.student.state_dict()
        assert not torch.equal(reference["fc.weight"], prepare()[0].student.state_dict()["fc.weight"])  # it did train
        for name, value in other.student.state_dict().items():
            if not value.is_floating_point():
                assert torch.equal(value, reference[name]), name
                continue
            # Batched kernels sum in another order, and AdamW divides by the gradient's own size, so elements whose
            # gradient is near zero move differently by up to a fraction of lr; every other element agrees to 1e-4.
            # A semantic slip (another member's batches or statistics) moves nearly every element by ~lr = 1e-2 per step.
            difference = (value - reference[name]).abs()
            assert float(difference.max()) < 5e-3 and float((difference > 1e-4).float().mean()) < 0.01, name
    for single, member in zip(losses_alone, losses_together, strict=True):
        assert single.keys() == member.keys()
        for name in single:
            assert member[name] == pytest.approx(single[name], rel=1e-4, abs=1e-6)


def test_members_draw_their_own_batches(host, cache_dir) -> None:
    _, data, _ = _prepared_pair(host, cache_dir, "kd")
    first, second = (BatchStream(data.source_train, 32, derive_seed(seed, "student-batches")).next()[2] for seed in (0, 1))
    assert not torch.equal(first, second)


def _rows(store: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(store) as db:
        return db.execute("SELECT spec, provenance FROM runs WHERE status = 'done'").fetchall()


# In the slow env: the default run must stay under 10 minutes on 2 cores.
@pytest.mark.slow
def test_a_vmapped_grid_records_every_seed_as_its_own_run_with_its_numerics(cache_dir, capsys) -> None:
    grid = ["run", "--budget", "smoke", "--tasks", "printed_to_handwritten", "--recipes", "kd", "--seeds", "0,1",
            "--device", "cpu", "--threads", "1", "--no-progress"]
    assert main([*grid, "--store", "plain.sqlite", "--out-dir", "plain"]) == 0
    capsys.readouterr()
    assert main([*grid, "--vmap-seeds", "--store", "vmapped.sqlite", "--out-dir", "vmapped"]) == 0
    err = capsys.readouterr().err
    assert "6 done, 0 failed" in err and "0 teachers trained" in err  # the seeds' teachers are the plain grid's
    rows = _rows(Path("vmapped.sqlite"))
    assert len(rows) == 6 and all(json.loads(spec)["numerics"] == "cpu fp32 1 thread, seeds vmapped" for spec, _ in rows)
    assert all(json.loads(prov)["vmapped_with_seeds"] == [0, 1] for _, prov in rows)
    assert "seeds vmapped" in Path("vmapped/embedded.md").read_text()


@pytest.mark.parametrize("extra, message", [
    (["--recipes", "fitnet+kd"], "recipe 'fitnet+kd' cannot train its seeds as a vmapped ensemble: component 'fitnet' reads "
                                 "intermediate feature maps; run it without vmapped seeds"),
    (["--compile"], "vmapped seeds and --compile cannot be combined yet; choose one"),
])
def test_what_an_ensemble_cannot_train_is_refused_before_any_work(cache_dir, capsys, extra, message) -> None:
    assert main(["run", "--budget", "smoke", "--vmap-seeds", "--no-progress", *extra]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"cdkd-bench: error: {message}"]
