"""Applying a selection rule to stored runs: which checkpoint of a run counts, and whether a rule can be
applied at all to what the runs recorded. Torch-free, like every command that only reads the store."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from cdkd_bench.declarations import Selector
from cdkd_bench.errors import UserError
from cdkd_bench.store import StoredRun


def checkpoint_history(run: StoredRun) -> list[Mapping[str, Any]]:
    """The metrics of each evaluated checkpoint of a run, in training order.

    A run stored before checkpoints were kept has one checkpoint: its final metrics.
    """
    return run.metrics.get("checkpoints") or [run.metrics]


def choose_checkpoint(run: StoredRun, selector: Selector | None) -> dict[str, Any]:
    """The run's metrics with those of the checkpoint the rule picks laid over them (the last checkpoint
    when no rule is given): run-level numbers such as the teacher's stay, per-checkpoint ones are the chosen one's."""
    history = checkpoint_history(run)
    index = selector.choose(history) if selector is not None else len(history) - 1
    return {**run.metrics, **history[index]}


def _missing(run: StoredRun, needs: Sequence[str]) -> set[str]:
    """The needed keys that at least one of the run's checkpoints lacks."""
    return {key for checkpoint in checkpoint_history(run) for key in needs if key not in checkpoint}


def check_selectable(runs: Iterable[StoredRun], selector: Selector | None, alternatives: Iterable[Selector] = ()) -> None:
    """Refuse, in one sentence, a rule that reads a metric some finished run did not record.

    Choosing among checkpoints that lack the rule's score would quietly fall back to some
    other choice for those runs and mix two rules in one table. ``alternatives`` (the
    installed rules) are searched for honest rules every finished run can serve, to name them.
    """
    if selector is None or not selector.needs:
        return
    finished = [run for run in runs if run.status == "done"]
    lacking = [missing for missing in (_missing(run, selector.needs) for run in finished) if missing]
    if not lacking:
        return
    keys = [key for key in selector.needs if any(key in missing for missing in lacking)]
    regimes = sorted({run.spec.label_regime for run in finished if _missing(run, selector.needs)})
    # A metric only some label regimes produce (target_val.acc: ssda-K) is missing for a reason other than age.
    why = (f"their label regime ({_and(regimes)}) has no data for it, or they were trained by an older cdkd-bench"
           if any(key.startswith("target_val.") for key in keys) else "they were trained by an older cdkd-bench")
    usable = [rule.name for rule in _ordered(alternatives)
              if rule.name != selector.name and not rule.oracle and not any(_missing(run, rule.needs) for run in finished)]
    instead = f"choose another rule ({', '.join(usable)}) or train them again" if usable else "train them again"
    raise UserError(f"selection rule {selector.name!r} reads {_and(keys)}, which {_how_many(len(lacking), len(finished))} "
                    f"did not record ({why}); {instead}")


def _ordered(rules: Iterable[Selector]) -> list[Selector]:
    # The default rule first: it is the one a user who did not ask for a rule would have had.
    return sorted(rules, key=lambda rule: (not rule.default, rule.name))


def _how_many(count: int, total: int) -> str:
    if count == total:
        return "the only finished run" if total == 1 else f"all {total} finished runs"
    return f"{count} of the {total} finished runs"


def _and(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
