"""Which configuration of an hparam search a selection rule chooses (torch-free: tables use it too).

Each search chooses per (task, recipe, everything else but hparams and seeds): the rule
scores each finished trial at the checkpoint it picks (``Selector.score``, higher is better)
and the best wins, the lower trial on a tie (the defaults, trial 0, before a draw that is
only as good). A rule without a score cannot choose; tables then show trial 0 and say so.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable

from cdkd_bench.declarations import Selector
from cdkd_bench.selection import checkpoint_history
from cdkd_bench.spec import RunSpec
from cdkd_bench.store import StoredRun

SearchKey = tuple[str, str, str]
"""What one search chooses a configuration for: (task, recipe, a hash of everything else but hparams and seeds)."""


def search_key(spec: RunSpec) -> SearchKey:
    """What a search chooses for: the same task, recipe, teacher and protocol, over every trial configuration."""
    general = dataclasses.replace(spec, hparams={}, seed=0, search=None, teacher=dataclasses.replace(spec.teacher, seed=0))
    return spec.task, spec.recipe, general.run_id


def is_trial(spec: RunSpec) -> bool:
    """A run of a search on its search seed (the winner's runs on the other seeds follow it, they are not trials)."""
    return spec.search is not None and spec.seed == spec.search.get("seed", spec.seed)


def configuration_score(run: StoredRun, selector: Selector) -> float | None:
    """The rule's score of a finished trial at the checkpoint the rule picks (None for a failed run)."""
    if run.status != "done" or selector.score is None:
        return None
    history = checkpoint_history(run)
    return float(selector.score(history[selector.choose(history)]))


def chosen_trials(runs: Iterable[StoredRun], selector: Selector) -> dict[SearchKey, RunSpec]:
    """Per search, the trial run whose configuration the rule scores best (ties: the lower trial, the defaults first)."""
    best: dict[SearchKey, tuple[float, int, RunSpec]] = {}
    for run in runs:
        score = configuration_score(run, selector)
        if not is_trial(run.spec) or score is None or math.isnan(score):
            continue  # only the trials on the search seed compete; the winner's runs on other seeds follow it
        key = search_key(run.spec)
        candidate = (score, -run.spec.search["trial"], run.spec)  # type: ignore[index]
        if key not in best or candidate[:2] > best[key][:2]:
            best[key] = candidate
    return {key: spec for key, (_, _, spec) in best.items()}
