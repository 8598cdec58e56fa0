"""Tables of an hparam search: rows are the chosen configurations over their seeds, every trial is listed."""

from __future__ import annotations

import dataclasses

import pytest
from leaderboard_runs import spec

from cdkd_bench.leaderboard import build_tables, render_markdown
from cdkd_bench.plugins import load_host
from cdkd_bench.store import StoredRun

TASK = "printed_to_handwritten"


@pytest.fixture(scope="module")
def host():
    return load_host(families=("suite", "selector"))


def run(recipe, seed, trial, source_val, accuracy, *, search_seed=0, temperature=None, failed=False):
    s = spec(recipe, TASK, seed)
    hparams = {"kd": {"temperature": temperature if temperature is not None else 4.0}} if recipe == "kd" else s.hparams
    s = dataclasses.replace(s, hparams=hparams, search={"trials": 3, "hparam_seed": 0, "trial": trial, "seed": search_seed})
    if failed:
        return StoredRun(s.run_id, "failed", s, {}, {}, {}, "RuntimeError: boom", "")
    checkpoint = {"step": 10, "target_test.acc": accuracy, "source_val.acc": source_val}
    metrics = {**checkpoint, "checkpoints": [checkpoint], "teacher.target_test.acc": 80.0, "teacher.source_val.acc": 99.0}
    return StoredRun(s.run_id, "done", s, metrics, {}, {}, None, "")


def search_runs():
    return [
        # kd's search on seed 0: trial 1 has the best source validation, trial 0 (the defaults) the best test accuracy.
        run("kd", 0, 0, source_val=70, accuracy=66),
        run("kd", 0, 1, source_val=90, accuracy=61, temperature=2.0),
        run("kd", 0, 2, source_val=0, accuracy=0, temperature=8.0, failed=True),
        # the chosen configuration (trial 1) on the other seeds: only these and the search seed's run make the row
        run("kd", 1, 1, source_val=95, accuracy=63, temperature=2.0),
        run("kd", 2, 1, source_val=85, accuracy=62, temperature=2.0),
        *(run("source_only", seed, 0, source_val=80, accuracy=50 + seed) for seed in (0, 1, 2)),
    ]


def test_the_row_is_the_chosen_configuration_over_its_seeds_and_every_trial_is_listed(host) -> None:
    [table] = build_tables(search_runs(), host, "source_val")
    assert table.protocol.search == "3 trials, hparam seed 0"
    kd = next(r for r in table.rows if r.name == "kd")
    assert kd.values[f"embedded.{TASK}"] == {0: 61, 1: 63, 2: 62}  # trial 1 on its three seeds; never trial 0's 66
    assert not kd.failed  # the failed trial is a trial, not a run of the chosen configuration
    text = render_markdown([table], "search", host)
    assert "| kd | 1 | kd.temperature=2.0 | 90 / 61.0 ✓ |" in text
    assert "| kd | 0 | defaults | 70 / 66.0 |" in text
    assert "| kd | 2 | kd.temperature=8.0 | failed ✗ |" in text
    assert "3 hyper-parameter trials per recipe" in text


def test_changing_the_rule_changes_the_choice_without_retraining(host) -> None:
    [table] = build_tables(search_runs(), host, "oracle")
    kd = next(r for r in table.rows if r.name == "kd")
    assert kd.values[f"embedded.{TASK}"] == {0: 66}  # the defaults win on test accuracy; they ran on the search seed only
    assert any("ORACLE" in flag for flag in table.flags)


def test_a_rule_that_scores_nothing_shows_the_defaults_and_says_so(host) -> None:
    [table] = build_tables(search_runs(), host, "last")
    kd = next(r for r in table.rows if r.name == "kd")
    assert kd.values[f"embedded.{TASK}"] == {0: 66}
    assert any("cannot choose between the configurations" in flag for flag in table.flags)


def test_search_runs_never_share_a_table_with_runs_made_without_one(host) -> None:
    plain = [StoredRun(s.run_id, "done", s, r.metrics, {}, {}, None, "")
             for r in search_runs()[:1] for s in [dataclasses.replace(r.spec, search=None)]]
    tables = build_tables([*search_runs(), *plain], host, "source_val")
    assert sorted(t.protocol.search for t in tables) == ["", "3 trials, hparam seed 0"]
