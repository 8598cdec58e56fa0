"""Equal search effort: N hparam configurations per recipe, chosen by a selection rule, then run on every seed.

``trials = N`` draws N configurations for every recipe from the search spaces its components
declare (``metadata={"search": ...}``): trial 0 is the defaults, trials 1…N−1 are random
draws. The draws come from the *hparam seed* and the recipe only, never from a training
seed, so every training seed of a configuration trains the same configuration and the
search cannot be re-rolled by changing seeds (DomainBed's ``hparams_seed`` / ``trial_seed``
split). Values given with ``--set`` are fixed, not searched.

Every trial trains on the grid's first seed (the *search seed*). For each (recipe, task,
teacher recipe) the selection rule scores each trial at the checkpoint it chooses, and the
best configuration is then trained on the other seeds. A table's error bars are over the
seeds of the chosen configuration only; every trial is kept in the store and listed in the
trials table.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from cdkd_bench.api import Method
from cdkd_bench.declarations import Selector
from cdkd_bench.errors import UserError
from cdkd_bench.grid import GridSummary, _log_to_stderr, run_grid
from cdkd_bench.hparams import build_hparams, search_choices, split_overrides
from cdkd_bench.plugins import Host
from cdkd_bench.spec import SOURCE_TEACHER, RunSpec, derive_seed
from cdkd_bench.store import Store, StoredRun
from cdkd_bench.trial_choice import SearchKey, chosen_trials, search_key

MAX_DRAWS = 50
"""Redraws allowed when a drawn configuration fails the component's own validation."""


def _draw_value(rng: random.Random, default: Any, space: Sequence[Any]) -> Any:
    choices = search_choices(space)
    if choices is not None:
        return rng.choice(choices)
    low, high = space[0], space[1]
    if isinstance(default, int) and not isinstance(default, bool):
        if len(space) > 2:
            return int(round(math.exp(rng.uniform(math.log(low), math.log(high)))))
        return rng.randint(int(low), int(high))
    value = math.exp(rng.uniform(math.log(low), math.log(high))) if len(space) > 2 else rng.uniform(low, high)
    return float(f"{value:.4g}")  # four significant digits: readable in tables, and no finer than a search can tell apart


def draw_configuration(method: type[Method], fixed: Mapping[str, Any], rng: random.Random) -> dict[str, Any]:
    """One configuration of ``method``'s hparams: ``fixed`` values kept, the rest drawn from their search spaces."""
    for _ in range(MAX_DRAWS):
        values = dict(fixed)
        for f in dataclasses.fields(method.Hparams):
            space = f.metadata.get("search")
            if f.name not in fixed and space is not None:
                values[f.name] = _draw_value(rng, f.default, space)
        try:
            return dataclasses.asdict(build_hparams(method, values))
        except UserError:
            continue  # the component refused this combination (e.g. two values that must be ordered): draw again
    raise UserError(f"could not draw a valid configuration of {method.name!r} from its search space in {MAX_DRAWS} tries; "
                    "its declared ranges contradict its own checks")


def trial_hparams(host: Host, recipe: str, defaults: Mapping[str, Mapping[str, Any]], fixed: Mapping[str, Mapping[str, Any]],
                  hparam_seed: int, trial: int) -> dict[str, dict[str, Any]]:
    """Every component's hparams in trial ``trial`` of ``recipe`` (trial 0: the defaults, with the fixed values)."""
    if trial == 0:
        return {name: dict(values) for name, values in defaults.items()}
    rng = random.Random(derive_seed(hparam_seed, f"hparams:{recipe}:{trial}"))
    return {name: draw_configuration(host.methods.get(name), fixed.get(name, {}), rng) for name in recipe.split("+")}


def trial_specs(host: Host, specs: Iterable[RunSpec], trials: int, hparam_seed: int,
                fixed: Mapping[str, Mapping[str, Any]]) -> list[RunSpec]:
    """The search: each spec of the search seed in ``trials`` configurations (repeats of one configuration run once)."""
    out: list[RunSpec] = []
    for spec in specs:
        seen: set[str] = set()
        for trial in range(trials):
            hparams = trial_hparams(host, spec.recipe, spec.hparams, fixed, hparam_seed, trial)
            key = repr(sorted((name, sorted(values.items())) for name, values in hparams.items()))
            if key in seen:
                continue  # a recipe with nothing to search (source_only) or a repeated draw: one run is enough
            seen.add(key)
            out.append(dataclasses.replace(spec, hparams=hparams, search={"trials": trials, "hparam_seed": hparam_seed, "trial": trial,
                                                                           "seed": spec.seed}))
    return out


def follow_up_specs(specs: Iterable[RunSpec], trial_runs: Iterable[StoredRun], selector: Selector) -> list[RunSpec]:
    """The chosen configuration of each search on every other seed of the grid (the search seed's run exists already)."""
    chosen = chosen_trials(trial_runs, selector)
    by_key: dict[SearchKey, list[RunSpec]] = defaultdict(list)
    for spec in specs:
        by_key[search_key(dataclasses.replace(spec, search=None))].append(spec)
    out = []
    for key, members in by_key.items():
        if key not in chosen:
            continue  # every trial failed: nothing to follow up, and the table shows the failures
        winner = chosen[key]
        out += [dataclasses.replace(s, hparams=winner.hparams, search=winner.search) for s in members if s.seed != winner.seed]
    return out


def check_search(trials: int, selector: Selector) -> None:
    if trials > 1 and selector.score is None:
        raise UserError(f"selection rule {selector.name!r} cannot compare configurations (it scores no checkpoint); "
                        "search with a rule that does, e.g. --selection source_val")


def plan_search(host: Host, request: Any, specs: Sequence[RunSpec]) -> tuple[list[RunSpec], list[RunSpec]]:
    """(the trials on the search seed, the grid's runs on its other seeds in their default configuration, to be
    given the chosen configuration by ``follow_up_specs`` once the trials are done)."""
    search_seed = specs[0].seed  # the grid's first seed: expand lists seeds outermost, in the order asked
    recipes = {s.recipe for s in specs} | {s.teacher.teacher_recipe for s in specs if s.teacher.teacher_recipe != SOURCE_TEACHER}
    fixed = split_overrides(request.hparams, recipes, host.methods)
    trials = trial_specs(host, [s for s in specs if s.seed == search_seed], request.trials, request.hparam_seed, fixed)
    return trials, [s for s in specs if s.seed != search_seed]


def run_searched_grid(host: Host, request: Any, specs: list[RunSpec], store: Store, settings: Any, **grid_options: Any) -> GridSummary:
    """``run_grid``, with the search first when the request asks for ``trials`` > 1: the trials on the search
    seed, then each search's chosen configuration on the other seeds."""
    if request.trials <= 1:
        return run_grid(host, specs, store, settings, request.executor, **grid_options)
    selector = host.selectors.get(request.selection or host.default("selection rule"))
    check_search(request.trials, selector)
    trials, later = plan_search(host, request, specs)
    log = grid_options.get("log", _log_to_stderr)
    log(f"search: {len(trials)} trial runs ({request.trials} configurations per recipe, hparam seed {request.hparam_seed}) "
        f"on seed {trials[0].seed}, chosen by rule {selector.name!r}; then the chosen configurations on {len(later)} runs")
    first = run_grid(host, trials, store, settings, request.executor, **grid_options)
    trial_ids = {s.run_id for s in trials}
    finished = [run for run in store.runs(suite=trials[0].suite, status=None) if run.run_id in trial_ids]
    second = run_grid(host, follow_up_specs(later, finished, selector), store, settings, request.executor, **grid_options)
    return _combined(first, second)


def _combined(first: GridSummary, second: GridSummary) -> GridSummary:
    total = GridSummary()
    for f in dataclasses.fields(GridSummary):
        a, b = getattr(first, f.name), getattr(second, f.name)
        setattr(total, f.name, a + b)
    return total
