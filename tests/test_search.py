"""Equal search effort: configurations drawn from the hparam seed only, chosen by the rule, then run on every seed."""

from __future__ import annotations

import dataclasses

import pytest

from cdkd_bench.errors import UserError
from cdkd_bench.grid import GridRequest, expand
from cdkd_bench.plugins import load_host
from cdkd_bench.search import chosen_trials, follow_up_specs, plan_search, trial_specs
from cdkd_bench.store import StoredRun

TASK = "printed_to_handwritten"


@pytest.fixture(scope="module")
def host():
    return load_host()


_EXPANDED: dict[tuple, list] = {}


def grid(host, trials=4, hparam_seed=0, seeds=(0, 1), recipes=("kd",), hparams=None):
    request = GridRequest(tasks=(TASK,), recipes=recipes, seeds=seeds, budget="smoke", trials=trials, hparam_seed=hparam_seed,
                          selection="source_val", hparams=hparams or {})
    # Planning hashes the domains and checks every recipe: once per grid is enough, since a search only redraws
    # hparams from the hparam seed and never changes what expand plans.
    key = (tuple(seeds), tuple(recipes), tuple(sorted((hparams or {}).items())))
    if key not in _EXPANDED:
        _EXPANDED[key] = expand(host, request)
    return request, _EXPANDED[key]


def kd_trials(host, **kwargs):
    request, specs = grid(host, **kwargs)
    trials, later = plan_search(host, request, specs)
    return [s for s in trials if s.recipe == "kd"], later


def test_trial_zero_is_the_defaults_and_the_others_are_drawn_inside_the_search_space(host) -> None:
    trials, _ = kd_trials(host, trials=6)
    assert [t.search["trial"] for t in trials] == list(range(6))
    assert trials[0].hparams["kd"] == {"temperature": 4.0, "weight": 1.0, "variant": "kl", "domains": "both"}
    for trial in trials[1:]:
        values = trial.hparams["kd"]
        assert 1.0 <= values["temperature"] <= 8.0 and 0.1 <= values["weight"] <= 10.0
        assert values["variant"] in ("kl", "mse") and values["domains"] in ("both", "source", "target")
    assert len({repr(t.hparams) for t in trials}) == 6
    assert all(t.search == {"trials": 6, "hparam_seed": 0, "trial": t.search["trial"], "seed": 0} for t in trials)


def test_configurations_depend_on_the_hparam_seed_and_never_on_the_training_seed(host) -> None:
    first, _ = kd_trials(host, seeds=(0, 1))
    other_training_seed, _ = kd_trials(host, seeds=(7, 1))
    other_hparam_seed, _ = kd_trials(host, hparam_seed=1)
    assert [t.hparams for t in first] == [t.hparams for t in other_training_seed]
    assert [t.seed for t in other_training_seed] == [7] * 4  # the search runs on the grid's first seed
    assert [t.hparams for t in first][1:] != [t.hparams for t in other_hparam_seed][1:]
    again, _ = kd_trials(host)
    assert [t.hparams for t in first] == [t.hparams for t in again]


def test_values_set_by_the_user_are_fixed_not_searched(host) -> None:
    trials, _ = kd_trials(host, hparams={"kd.temperature": 2.0})
    assert {t.hparams["kd"]["temperature"] for t in trials} == {2.0}
    assert len({t.hparams["kd"]["weight"] for t in trials}) == 4


def test_a_recipe_without_hparams_runs_once(host) -> None:
    request, specs = grid(host, recipes=("kd",))
    trials, _ = plan_search(host, request, specs)
    assert sum(1 for t in trials if t.recipe == "source_only") == 1


def finished(spec, scores, status="done"):
    checkpoints = [{"step": i, "source_val.acc": s, "target_test.acc": 50.0} for i, s in enumerate(scores)]
    return StoredRun(spec.run_id, status, spec, {"checkpoints": checkpoints} if status == "done" else {}, {}, {}, None, "")


def test_the_rule_chooses_the_configuration_and_the_chosen_one_runs_on_the_other_seeds(host) -> None:
    trials, later = kd_trials(host, trials=4, seeds=(0, 1, 2))
    selector = host.selectors.get("source_val")
    # Scored at the checkpoint the rule picks (the best source-val one): trial 2 wins; trial 3 failed.
    runs = [finished(trials[0], [60, 70]), finished(trials[1], [80, 40]), finished(trials[2], [50, 90]),
            finished(trials[3], [], status="failed")]
    chosen = chosen_trials(runs, selector)
    assert [spec.search["trial"] for spec in chosen.values()] == [2]
    follow = [s for s in follow_up_specs(later, runs, selector) if s.recipe == "kd"]
    assert sorted(s.seed for s in follow) == [1, 2]
    assert all(s.hparams == trials[2].hparams and s.search == trials[2].search for s in follow)
    # A tie goes to the lower trial: the defaults before a draw that is only as good.
    tied = chosen_trials([finished(trials[1], [90]), finished(trials[0], [90])], selector)
    assert [spec.search["trial"] for spec in tied.values()] == [0]
    # The chosen configuration's runs on other seeds never compete, however they score.
    other_seed = next(s for s in follow if s.seed == 1)
    assert chosen_trials([*runs, finished(dataclasses.replace(trials[1], seed=1), [99])], selector)[next(iter(chosen))].search["trial"] == 2
    assert other_seed.search["seed"] == 0


def test_a_search_needs_a_rule_that_scores_checkpoints(host, tmp_path) -> None:
    from cdkd_bench.search import check_search

    with pytest.raises(UserError, match="cannot compare configurations"):
        check_search(3, host.selectors.get("last"))
    check_search(1, host.selectors.get("last"))  # no search: any rule will do


def test_trial_specs_keep_everything_but_the_hparams(host) -> None:
    _, specs = grid(host, trials=1, seeds=(0,))
    kd = next(s for s in specs if s.recipe == "kd")
    trials = trial_specs(host, [kd], 3, 0, {})
    assert all(dataclasses.replace(t, hparams=kd.hparams, search=None) == kd for t in trials)
    assert len({t.run_id for t in trials}) == 3 and kd.run_id not in {t.run_id for t in trials}
