"""Store → leaderboard tables: one per protocol, rows = reference rows and recipes, columns = tasks."""

from __future__ import annotations

import dataclasses
import math
import statistics
import typing
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cdkd_bench.declarations import HEADLINES, Selector, Suite
from cdkd_bench.errors import UserError, unknown_name
from cdkd_bench.folders import writable_folder, write_text_atomically
from cdkd_bench.plugins import NAME_PATTERN, Host
from cdkd_bench.power import ALPHA, POWER, minimal_detectable_difference
from cdkd_bench.selection import check_selectable, choose_checkpoint
from cdkd_bench.spec import SOURCE_TEACHER, RunSpec, canonical_json
from cdkd_bench.store import StoredRun
from cdkd_bench.trial_choice import SearchKey, chosen_trials, configuration_score, is_trial, search_key

METRIC = "target_test.acc"
# Below this many points between teacher and source-only student the ratio is noise, not news.
MIN_GAP = 1.0
FAILURES_LISTED = 10
COMMANDS_LISTED = 3
LEADERBOARD_FORMATS = ("md", "csv", "json", "tex", "html")


@dataclass(frozen=True)
class Protocol:
    """What must match for numbers to share a table."""

    suite: str
    teacher_arch: str
    student_arch: str
    teacher_recipe: str
    label_regime: str
    selection: str
    budget: str
    budget_numbers: str
    """Every number of the budget and the protocol version: two budgets sharing a name never share a table."""
    numerics: str
    student_augmentation: str
    """The students' source augmentation (canonical JSON of the policy; ``null`` when parity was off)."""
    data: str = ""
    """Which generated images the runs saw, where one domain came in several versions (see ``_data_variants``)."""
    search: str = ""
    """The hparam search the runs belong to (``5 trials, hparam seed 0``); "" for runs made without one."""


ROW_NOTES = {
    "teacher": "trained on source",
    "source_teacher": "trained on source, from the source teacher's table: what adapting it changed",
    "baseline": "student on source only",
    "method": "",
    "upper_bound": "upper bound: trained with target labels",
}


@dataclass
class Row:
    name: str
    kind: str = "method"  # one of ROW_NOTES
    # task -> seed -> value; one value per seed (the teacher row dedups runs sharing a teacher)
    values: dict[str, dict[int, float]] = field(default_factory=lambda: defaultdict(dict))
    # task -> seeds whose run failed: shown in the cell, never silently dropped
    failed: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    # The row's network: the student's (the teacher's on teacher rows); None where the runs predate counting it.
    params: int | None = None
    macs: int | None = None
    """Multiply-accumulates per image at the suite's input size."""

    def count_compute(self, metrics: dict[str, Any], network: str) -> None:
        """Take ``network``'s parameter and MAC counts from a run's metrics, where no earlier run of the row gave them."""
        if self.params is None and metrics.get(f"{network}.params") is not None:
            self.params = int(metrics[f"{network}.params"])
        if self.macs is None and metrics.get(f"{network}.macs") is not None:
            self.macs = int(metrics[f"{network}.macs"])

    def seeds_complete(self, tasks: Sequence[str]) -> list[int]:
        seeds = set.intersection(*(set(self.values.get(t, {})) for t in tasks)) if tasks else set()
        return sorted(seeds)

    def average(self, tasks: Sequence[str], seeds: Sequence[int] | None = None) -> list[float]:
        """Per seed, the mean over all tasks (``seeds``, or every seed that has every task)."""
        chosen = self.seeds_complete(tasks) if seeds is None else seeds
        return [statistics.fmean(self.values[t][s] for t in tasks) for s in chosen]


@dataclass
class Table:
    protocol: Protocol
    tasks: list[str]
    rows: list[Row]
    teacher_source_val: dict[str, dict[int, float]]
    flags: list[str]
    produced_with: list[str] = field(default_factory=list)
    failed_runs: list[StoredRun] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    data: list[str] = field(default_factory=list)
    test_images: dict[str, str] = field(default_factory=dict)
    """Per task, how many target images each run was scored on, and by which protocol."""
    trials: list[int] = field(default_factory=lambda: [1])
    """Hyper-parameter configurations tried per recipe (distinct values over the runs; 1 unless the runs were a search)."""
    method_versions: dict[str, list[int]] = field(default_factory=dict)
    """Each recipe component's version(s) over the table's runs."""
    package_versions: list[str] = field(default_factory=list)
    """The distinct cdkd-bench, torch and timm versions behind the runs (from their provenance)."""
    data_hashes: dict[str, str] = field(default_factory=dict)
    """Each domain's content hash (one per domain within a table: other images make another table)."""

    trial_lines: list[str] = field(default_factory=list)
    """The trials table of an hparam search (Markdown lines), under the main table."""

    @property
    def common_seeds(self) -> list[int]:
        """Seeds with every task in every row that has any complete seed: avg and gap closed use only these.

        Comparing rows over different seed sets would credit a row with its lucky seeds;
        a row with no complete seed at all (failed everywhere, say) shows no average.
        """
        complete = [set(row.seeds_complete(self.tasks)) for row in self.rows]
        complete = [seeds for seeds in complete if seeds]
        return sorted(set.intersection(*complete)) if complete else []


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n-1); no deviation from a single value."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def format_cell(values: Sequence[float], failed: int = 0) -> str:
    """``mean ± std (n=k)``; failed runs are counted in the cell, e.g. ``(n=5, 1 failed ✗)``."""
    mean, std = mean_std(values) if values else (None, None)
    return format_stats(mean, std, len(values), failed)


def format_stats(mean: float | None, std: float | None, n: int, failed: int = 0) -> str:
    """A cell from its numbers: ``format_cell`` of the ``n`` values they summarise."""
    failures = f", {failed} failed ✗" if failed else ""
    if not n or mean is None:
        return f"— (n=0{failures})" if failed else "—"
    spread = f" ± {std:.1f}" if std is not None else ""
    return f"{mean:.1f}{spread} (n={n}{failures})"


def _budget_numbers(spec: RunSpec) -> str:
    t = spec.teacher
    return canonical_json({
        "student": [spec.steps, spec.batch_size, spec.lr, spec.weight_decay, spec.eval_points, spec.backbone_lr_mult],
        "teacher": [t.steps, t.batch_size, t.lr, t.weight_decay, t.augmentation], "protocol": spec.protocol,
    })


def _installed_suite(name: str, host: Host | None) -> Suite | None:
    """The suite of that name when a host is given and has it (tables of uninstalled suites still render)."""
    return host.suites.get(name) if host is not None and name in host.suites else None


def headline_metric(suite: str, host: Host | None) -> str:
    """The stored metric a suite's tables show: top-1 accuracy, or the per-class mean for suites that say so (VisDA)."""
    installed = _installed_suite(suite, host)
    return f"target_test.{installed.headline}" if installed is not None else METRIC


def selected_metrics(run: StoredRun, selector: Selector | None) -> dict[str, Any]:
    """The metrics of the checkpoint the rule picks (the run's last checkpoint when no rule is given)."""
    return choose_checkpoint(run, selector)


def build_tables(runs: list[StoredRun], host: Host | None = None, selection: str | None = None) -> list[Table]:
    """Tables of ``runs`` under selection rule ``selection`` (the host's default rule when None)."""
    rule = selection or (host.default("selection rule") if host is not None else "last")
    selector = host.selectors.get(rule) if host is not None else None
    check_selectable(runs, selector, [entry.value for entry in host.selectors] if host is not None else ())
    grouped: dict[Protocol, list[StoredRun]] = defaultdict(list)
    for run in runs:
        s = run.spec
        grouped[Protocol(s.suite, s.teacher.arch, s.student_arch, s.teacher.teacher_recipe, s.label_regime, rule, s.budget,
                         _budget_numbers(s), s.numerics, canonical_json(s.source_augmentation), search=_search_label(s))].append(run)
    by_protocol: dict[Protocol, list[StoredRun]] = {}
    for protocol, group in grouped.items():
        for variant, members in _data_variants(group).items():
            by_protocol[dataclasses.replace(protocol, data=variant)] = members
    tables = []
    def order(protocol: Protocol) -> tuple[Any, ...]:
        # The suite's converged budget first, parity before its ablation, source teachers before adapted ones, then by protocol.
        installed = _installed_suite(protocol.suite, host)
        converged = installed.converged_budget if installed is not None else None
        return (protocol.budget != converged, protocol.student_augmentation == "null", protocol.teacher_recipe != SOURCE_TEACHER,
                tuple(vars(protocol).values()))

    for protocol, group in sorted(by_protocol.items(), key=lambda kv: order(kv[0])):
        table = _table(protocol, group, host, selector)
        source_teacher = by_protocol.get(dataclasses.replace(protocol, teacher_recipe=SOURCE_TEACHER))
        if protocol.teacher_recipe != SOURCE_TEACHER and source_teacher is not None:
            # The adapted teacher's table shows the source teacher too, on the same tasks and seeds where it ran.
            row = _teacher_row([r for r in source_teacher if r.spec.task in table.tasks], "source teacher", "source_teacher",
                               selector, host)
            table.rows = sorted([*table.rows, row], key=lambda r: (_KIND_ORDER[r.kind], r.name))
        tables.append(table)
    return tables


def _domain_hashes(spec: RunSpec) -> dict[str, str]:
    return {spec.source: spec.teacher.source_data, spec.target: spec.target_data}


def _data_variants(group: list[StoredRun]) -> dict[str, list[StoredRun]]:
    """Runs split by the images they saw, where a domain came with several content hashes (another
    machine's fonts or renderer): such numbers are never merged. Usually one variant, named ""."""
    seen: dict[str, set[str]] = defaultdict(set)
    for run in group:
        for domain, digest in _domain_hashes(run.spec).items():
            seen[domain].add(digest)
    conflicting = sorted(d for d, digests in seen.items() if len(digests) > 1)
    variants: dict[str, list[StoredRun]] = defaultdict(list)
    for run in group:
        hashes = _domain_hashes(run.spec)
        variants[", ".join(f"{d} {hashes[d]}" for d in conflicting if d in hashes)].append(run)
    return dict(variants)


def _task_order(protocol: Protocol, group: list[StoredRun], host: Host | None) -> list[str]:
    present = {r.spec.task for r in group}
    installed = _installed_suite(protocol.suite, host)
    if installed is not None:
        ordered = [t.name for t in installed.tasks if t.name in present]
        return ordered + sorted(present - set(ordered))
    return sorted(present)


def _row_kind(recipe: str, host: Host | None) -> str:
    components = recipe.split("+")
    # Traits, not classes: a leaderboard loads only suites and selection rules, and knows
    # the methods it did not import from the plugin index.
    known = host.method_traits() if host is not None else {}
    if not all(c in known for c in components):
        return "method"
    traits = [known[c] for c in components]
    if any(t.uses_target_labels for t in traits):
        return "upper_bound"
    if all(t.reference for t in traits):
        return "baseline"
    return "method"


_KIND_ORDER = {"teacher": 0, "source_teacher": 1, "baseline": 2, "method": 3, "upper_bound": 4}


def _configuration(spec: RunSpec) -> str:
    """What besides the recipe name makes two runs different methods: resolved hparams and component versions."""
    return canonical_json({"hparams": spec.hparams, "versions": spec.method_versions})


def _row_names(group: list[StoredRun]) -> dict[tuple[str, str], str]:
    """Row labels: the recipe, plus what differs where one recipe ran in several configurations."""
    configs: dict[str, dict[str, RunSpec]] = defaultdict(dict)
    for run in group:
        configs[run.spec.recipe].setdefault(_configuration(run.spec), run.spec)
    names = {}
    for recipe, by_config in configs.items():
        for config, spec in by_config.items():
            names[recipe, config] = recipe if len(by_config) == 1 else f"{recipe} [{_differences(spec, by_config.values())}]"
    return names


def _differences(spec: RunSpec, others: Iterable[RunSpec]) -> str:
    shown = []
    for component, values in sorted(spec.hparams.items()):
        for key, value in sorted(values.items()):
            if any(o.hparams.get(component, {}).get(key) != value for o in others):
                shown.append(f"{component}.{key}={value}")
    for component, version in sorted(spec.method_versions.items()):
        if any(o.method_versions.get(component) != version for o in others):
            shown.append(f"{component} v{version}")
    return ", ".join(shown)


def _teacher_row(group: list[StoredRun], name: str, kind: str, selector: Selector | None, host: Host | None) -> Row:
    """The teacher's target accuracy per task and seed, read from the runs that used it."""
    teacher = Row(name, kind=kind)
    for run in group:
        s = run.spec
        # Scored on the images the student rows are (the oracle's held-out split differs under the transductive protocol).
        if run.status == "done" and (_row_kind(s.recipe, host) != "upper_bound" or s.seed not in teacher.values[s.task]):
            teacher.values[s.task][s.seed] = selected_metrics(run, selector)[f"teacher.{headline_metric(s.suite, host)}"]
        if run.status == "done":
            teacher.count_compute(run.metrics, "teacher")
    return teacher


def _table(protocol: Protocol, group: list[StoredRun], host: Host | None, selector: Selector | None) -> Table:
    tasks = _task_order(protocol, group, host)
    teacher = _teacher_row(group, "teacher", "teacher", selector, host)
    recipe_rows: dict[tuple[str, str], Row] = {}
    flags = []
    trial_lines: list[str] = []
    if protocol.search:
        # Error bars over the seeds of each chosen configuration only; the other trials go to the trials table.
        chosen = _chosen_configurations(group, selector)
        trial_lines = _trials_table(group, chosen, selector, tasks, protocol, host)
        group = [r for r in group if chosen.get(search_key(r.spec)) == _configuration(r.spec)]
        if selector is None or selector.score is None:
            flags.append(f"Rule `{protocol.selection}` scores no checkpoint, so it cannot choose between the configurations of this "
                         "search: rows show the defaults (trial 0); a rule that scores (e.g. `source_val`) chooses among them.")
    names = _row_names(group)
    teacher_source_val: dict[str, dict[int, float]] = defaultdict(dict)
    failed_runs = []
    for run in group:
        s = run.spec
        key = (s.recipe, "chosen") if protocol.search else (s.recipe, _configuration(s))
        row = recipe_rows.setdefault(key, Row(s.recipe if protocol.search else names[key], kind=_row_kind(s.recipe, host)))
        if run.status != "done":
            row.failed[s.task].add(s.seed)
            failed_runs.append(run)
            continue
        m = selected_metrics(run, selector)
        row.values[s.task][s.seed] = m[headline_metric(s.suite, host)]
        row.count_compute(run.metrics, "student")
        teacher_source_val[s.source][s.seed] = m["teacher.source_val.acc"]
    rows = sorted([teacher, *recipe_rows.values()], key=lambda r: (_KIND_ORDER[r.kind], r.name))
    for row in rows:
        if row.kind == "upper_bound":
            flags.append(f"`{row.name}` reads target labels; it is the upper bound, not a competitor.")
    if selector is not None and selector.oracle:
        flags.append(f"ORACLE SELECTION: rule `{protocol.selection}` chose checkpoints using target test labels.")
    if protocol.data:
        flags.append(f"Other machines generated some domains differently; this table holds only runs on: {protocol.data}.")
    table = Table(protocol, tasks, rows, teacher_source_val, flags, _produced_with(group), failed_runs, _commands(group),
                  _data_identity(group), _test_images(group), _trials(group), _method_versions(group), _package_versions(group),
                  _data_hashes(group))
    table.trial_lines = trial_lines
    return table


def _search_label(spec: RunSpec) -> str:
    if spec.search is None:
        return ""
    return f"{spec.search['trials']} trials, hparam seed {spec.search['hparam_seed']}"


def _chosen_configurations(group: list[StoredRun], selector: Selector | None) -> dict[SearchKey, str]:
    """Per search, the configuration the rule chooses (trial 0 under a rule that scores nothing)."""
    chosen = chosen_trials(group, selector) if selector is not None and selector.score is not None else {}
    for run in group:
        if run.spec.search is not None and run.spec.search["trial"] == 0:
            chosen.setdefault(search_key(run.spec), run.spec)
    return {key: _configuration(spec) for key, spec in chosen.items()}


def _trials_table(group: list[StoredRun], chosen: dict[SearchKey, str], selector: Selector | None, tasks: list[str],
                  protocol: Protocol, host: Host | None) -> list[str]:
    """Every trial of the search, on its search seed: the rule's score and the accuracy at the checkpoint it picks."""
    trials = [r for r in group if is_trial(r.spec)]
    if not trials:
        return []
    by_recipe: dict[str, dict[int, dict[str, StoredRun]]] = defaultdict(lambda: defaultdict(dict))
    for run in trials:
        by_recipe[run.spec.recipe][run.spec.search["trial"]][run.spec.task] = run  # type: ignore[index]
    seed = trials[0].spec.search.get("seed", trials[0].spec.seed)  # type: ignore[union-attr]
    scored = selector is not None and selector.score is not None
    lines = [f"Trials of the search ({protocol.search}): every configuration trained on seed {seed}; per task "
             + (f"the score of rule `{protocol.selection}` / target accuracy at the checkpoint it picks"
                if scored else "the target accuracy at the last checkpoint")
             + "; ✓ the configuration chosen for that task, then trained on every seed. Trial 0 is the defaults.", ""]
    lines.append("| recipe | trial | configuration | " + " | ".join(_short_task(t, protocol.suite) for t in tasks) + " |")
    lines.append("|---|---:|---|" + "---:|" * len(tasks))
    for recipe in sorted(by_recipe):
        defaults = next((next(iter(runs.values())).spec for trial, runs in by_recipe[recipe].items() if trial == 0), None)
        for trial in sorted(by_recipe[recipe]):
            runs = by_recipe[recipe][trial]
            spec = next(iter(runs.values())).spec
            config = _differences(spec, [defaults]) if defaults is not None and trial else ""
            cells = []
            for task in tasks:
                found = runs.get(task)
                if found is None:
                    cells.append("—")
                    continue
                if found.status != "done":
                    cells.append("failed ✗")
                    continue
                picked = selected_metrics(found, selector if scored else None)
                value = f"{picked[headline_metric(found.spec.suite, host)]:.1f}"
                score = configuration_score(found, selector) if scored and selector is not None else None
                mark = " ✓" if chosen.get(search_key(found.spec)) == _configuration(found.spec) else ""
                cells.append((f"{score:.4g} / {value}" if score is not None else value) + mark)
            lines.append(f"| {recipe} | {trial} | {config or 'defaults'} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _trials(group: list[StoredRun]) -> list[int]:
    """Hyper-parameter configurations tried per recipe, as the runs of a search record it in their spec; 1 otherwise."""
    return sorted({int((run.spec.search or {}).get("trials", 1)) for run in group}) or [1]


def _method_versions(group: list[StoredRun]) -> dict[str, list[int]]:
    versions: dict[str, set[int]] = defaultdict(set)
    for run in group:
        for component, version in run.spec.method_versions.items():
            versions[component].add(version)
    return {component: sorted(versions[component]) for component in sorted(versions)}


def _package_versions(group: list[StoredRun]) -> list[str]:
    seen = {f"cdkd-bench {p.get('cdkd_bench')}, torch {p.get('torch')}, timm {p.get('timm')}": None
            for p in (run.provenance for run in group) if p.get("cdkd_bench")}
    return list(seen)


def _data_hashes(group: list[StoredRun]) -> dict[str, str]:
    hashes = {domain: digest for run in group for domain, digest in _domain_hashes(run.spec).items()}
    return {domain: hashes[domain] for domain in sorted(hashes)}


def _data_identity(group: list[StoredRun]) -> list[str]:
    """Each domain's content hash and the versions of the packages its images came from (from provenance)."""
    shown: dict[str, str] = {}
    for run in group:
        for domain, identity in (run.provenance.get("data") or {}).items():
            packages = ", ".join(f"{name} {version}" for name, version in sorted(identity.get("packages", {}).items()))
            shown.setdefault(domain, f"`{domain}` {identity.get('hash')}" + (f" ({packages})" if packages else ""))
    return [shown[d] for d in sorted(shown)]


def _test_images(group: list[StoredRun]) -> dict[str, str]:
    """Per task, the number of target images the runs were scored on, per evaluation protocol."""
    counts: dict[str, dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
    for run in group:
        if run.status == "done" and "target_test.images" in run.metrics:
            counts[run.spec.task][run.spec.evaluation].add(int(run.metrics["target_test.images"]))
    return {task: "; ".join(f"{'/'.join(map(str, sorted(n)))} ({how})" for how, n in sorted(by.items()))
            for task, by in counts.items()}


def _produced_with(group: list[StoredRun]) -> list[str]:
    """The distinct software and devices behind a table's runs, from their stored provenance."""
    seen: dict[str, None] = {}
    for run in group:
        p = run.provenance
        if p:
            seen[f"cdkd-bench {p.get('cdkd_bench')}, torch {p.get('torch')}, timm {p.get('timm')}, on {p.get('device')}"] = None
    return list(seen)


def _commands(group: list[StoredRun]) -> list[str]:
    """The distinct command lines that produced a table's runs (recorded in their provenance)."""
    return list(dict.fromkeys(run.provenance["command"] for run in group if run.provenance.get("command")))


def _short_task(task: str, suite: str) -> str:
    name = task[len(suite) + 1:] if task.startswith(f"{suite}.") else task
    return name.replace("_to_", "→")


EMPTY_STORE = "No runs in the store yet; run `cdkd-bench run` first."


def render_markdown(tables: list[Table], title: str, host: Host | None = None) -> str:
    # The page is rendered from each table's DataFrame; those modules build on this one's Table, so they are imported here.
    from cdkd_bench.table_formats import markdown_page
    from cdkd_bench.table_frame import frame_table

    return markdown_page([frame_table(table) for table in tables], title, host)


def table_heading(table: Table, host: Host | None = None) -> list[str]:
    """The Markdown lines above a table's caption: its heading, whether it only demonstrates, its augmentation parity."""
    p = table.protocol
    augmentation = "off (ablation: only the teacher saw augmented source images)" if p.student_augmentation == "null" \
        else "on (every student's source batches get the teacher's augmentation policy)"
    adapted_by = f" adapted by `{p.teacher_recipe}`" if p.teacher_recipe != SOURCE_TEACHER else ""
    return [
        f"## Teacher `{p.teacher_arch}`{adapted_by} → student `{p.student_arch}`, budget `{p.budget}`",
        "",
        *_budget_note(table, host),
        f"Augmentation parity: {augmentation}.",
        "",
    ]


def table_footer(table: Table, host: Host | None = None) -> list[str]:
    """The Markdown lines under a table: the teachers' source accuracy, evaluation, published numbers, MDD, failures, provenance."""
    p = table.protocol
    lines = ["Source-domain validation accuracy of the teacher (%):", ""]
    lines.append("| source | teacher source-val acc |")
    lines.append("|---|---:|")
    for source, per_seed in sorted(table.teacher_source_val.items()):
        lines.append(f"| {source} | {format_cell(list(per_seed.values()))} |")
    lines.append("")
    lines += table.trial_lines
    lines += _evaluation_lines(table, host)
    lines += _published_lines(table, host)
    lines += detectable_difference_lines(table, table.common_seeds)
    if table.test_images:
        lines += ["Target images scored per run: " + "; ".join(
            f"{_short_task(t, p.suite)} {table.test_images[t]}" for t in table.tasks if t in table.test_images) + ".", ""]
    if table.failed_runs:
        lines += [f"Failed runs ({len(table.failed_runs)}; `cdkd-bench run --retry-failed` of the same grid runs them again):", ""]
        for run in table.failed_runs[:FAILURES_LISTED]:
            error = (run.error or "no error recorded").splitlines()[0][:160]
            lines.append(f"- `{run.spec.recipe}` on {_short_task(run.spec.task, p.suite)}, seed {run.spec.seed} "
                         f"(run `{run.run_id}`): {error}")
        if len(table.failed_runs) > FAILURES_LISTED:
            lines.append(f"- … and {len(table.failed_runs) - FAILURES_LISTED} more (`cdkd-bench` stores each error with its run)")
        lines.append("")
    if table.data:
        lines += ["Data (content hash of each domain's images and labels, and the packages that made them): "
                  + "; ".join(table.data) + ".", ""]
    if table.produced_with:
        lines += ["Produced with: " + "; ".join(table.produced_with) + ".", ""]
    if table.commands:
        lines += ["Produced by: " + "; ".join(f"`{command}`" for command in table.commands[:COMMANDS_LISTED])
                  + (f" and {len(table.commands) - COMMANDS_LISTED} more" if len(table.commands) > COMMANDS_LISTED else "") + ".", ""]
    return lines


def _headline_words(suite: str, host: Host | None) -> str:
    return HEADLINES[headline_metric(suite, host).removeprefix("target_test.")]


def _evaluation_lines(table: Table, host: Host | None) -> list[str]:
    """How each task's target was scored: its test split, or every image under the transductive protocol."""
    suite = _installed_suite(table.protocol.suite, host)
    if suite is None:
        return []
    targets = {t.name: t.target for t in suite.tasks}
    transductive = [t for t in table.tasks if targets.get(t) in suite.transductive_targets]
    if table.protocol.label_regime != "uda":
        return [f"Evaluation: label regime `{table.protocol.label_regime}` shows students target train labels (see "
                "docs/protocol.md, Label regimes), so every row is scored on each target's held-out test split, never seen "
                f"in training" + (", including the transductive targets of this suite." if transductive else "."), ""]
    if not transductive:
        return [f"Evaluation: on each target's test split, never seen in training or selection (suite `{suite.name}`).", ""]
    names = ", ".join(_short_task(t, suite.name) for t in transductive)
    return [f"Evaluation: transductive on {names} (the standard UDA protocol of this suite: every target image is "
            "unlabelled training data and test data); `target_oracle`, which reads target labels, trains on the "
            "target's train split and is scored on its held-out test split instead.", ""]


def _published_lines(table: Table, host: Host | None) -> list[str]:
    """Numbers from the literature for the table's tasks, beside ours but in their own table: their protocols differ."""
    suite = _installed_suite(table.protocol.suite, host)
    if suite is None:
        return []
    shorts = [_short_task(t, suite.name) for t in table.tasks]
    found = [r for r in suite.published if _short_task(r.task, suite.name) in shorts]
    if not found:
        return []
    recipes = list(dict.fromkeys(r.recipe for r in found))
    cells = {(r.recipe, _short_task(r.task, suite.name)): r.accuracy for r in found}
    lines = ["Published numbers for these tasks (accuracy %, from the sources below; not comparable cell by cell "
             "with the rows above: other architectures, schedules and selection rules):", ""]
    lines.append("| published | " + " | ".join(shorts) + " |")
    lines.append("|---|" + "---:|" * len(shorts))
    for recipe in recipes:
        lines.append(f"| {recipe} | " + " | ".join(f"{cells[recipe, t]:.1f}" if (recipe, t) in cells else "—" for t in shorts) + " |")
    lines.append("")
    for source, protocol in dict.fromkeys((r.source, r.protocol) for r in found):
        lines.append(f"- {source}" + (f": {protocol}" if protocol else ""))
    return [*lines, ""]


# The difference the embedded suite's published table is sized to detect (see docs/protocol.md).
WANTED_DIFFERENCE = 3.0


def paired_spreads(table: Table, seeds: Sequence[int]) -> tuple[dict[str, float], float | None, int]:
    """Pooled standard deviation of the per-seed differences between each method row and the source-only row,
    per task and for the task average, and the number of seeds paired (0 when there is nothing to pair)."""
    base = next((r for r in table.rows if r.kind == "baseline"), None)
    methods = [r for r in table.rows if r.kind == "method"]
    if base is None or not methods:
        return {}, None, 0
    per_task: dict[str, float] = {}
    for task in table.tasks:
        variances = []
        for row in methods:
            paired = sorted(set(row.values.get(task, {})) & set(base.values.get(task, {})))
            if len(paired) >= 2:
                variances.append(statistics.variance([row.values[task][s] - base.values[task][s] for s in paired]))
        if variances:
            per_task[task] = math.sqrt(statistics.fmean(variances))
    averaged = [statistics.variance([a - b for a, b in zip(row.average(table.tasks, seeds), base.average(table.tasks, seeds), strict=True)])
                for row in methods if len(seeds) >= 2 and set(seeds) <= set(row.seeds_complete(table.tasks))
                and set(seeds) <= set(base.seeds_complete(table.tasks))]
    return per_task, (math.sqrt(statistics.fmean(averaged)) if averaged else None), len(seeds)


def detectable_difference_lines(table: Table, seeds: Sequence[int]) -> list[str]:
    """The minimal detectable difference (paired over seeds) under a table, per task and for avg."""
    per_task, average, n = paired_spreads(table, seeds)
    if n < 2 or average is None:
        return ["Minimal detectable difference: not estimable (it needs a method row, the source-only row and at least "
                "2 seeds every row has on every task); with fewer seeds this table cannot tell methods apart.", ""]
    suite = table.protocol.suite
    avg_mdd = minimal_detectable_difference(average, n)
    tasks = "; ".join(f"{_short_task(t, suite)} {minimal_detectable_difference(sd, n):.1f}" for t, sd in per_task.items())
    verdict = (f"a {WANTED_DIFFERENCE:g}-point difference in avg is detectable" if avg_mdd <= WANTED_DIFFERENCE
               else f"this table cannot separate methods {WANTED_DIFFERENCE:g} points apart in avg; add seeds")
    return [f"Minimal detectable difference (paired over the {n} seeds; two-sided paired t-test, α = {ALPHA:g}, "
            f"power {POWER:.0%}; from the seed-to-seed spread of each method's difference to source only): "
            f"**avg {avg_mdd:.1f} points**; per task: {tasks}. So {verdict}.", ""]


def _budget_note(table: Table, host: Host | None) -> list[str]:
    """Says when a table's budget is not the suite's converged one: its numbers demonstrate, they do not rank."""
    p = table.protocol
    installed = _installed_suite(p.suite, host)
    if installed is None:
        return []
    converged = installed.converged_budget
    if converged is None or converged == p.budget:
        return []
    return [f"**Demonstration:** budget `{p.budget}` is shorter than `{converged}`, the budget at which this suite's methods "
            "have converged; these numbers show that the pipeline works, not how the methods rank. "
            f"Run `--budget {converged}` (and at least 5 seeds) for a table to cite.", ""]


def _mean_average(table: Table, kind: str, seeds: Sequence[int]) -> float | None:
    """The mean over ``seeds`` of the task-averaged accuracy of the first row of ``kind``."""
    for row in table.rows:
        if row.kind == kind and seeds and set(seeds) <= set(row.seeds_complete(table.tasks)):
            return statistics.fmean(row.average(table.tasks, seeds))
    return None


class RunSource(typing.Protocol):
    """What a leaderboard reads from a results store (a Store, or a merged view of several)."""

    def runs(self, suite: str | None = None, status: str | None = "done") -> list[StoredRun]: ...

    def suites(self) -> list[str]: ...


def check_suite_name(suite: str, store: RunSource, host: Host | None) -> None:
    """A leaderboard's suite must be one the plugins (when given) or the store know; it also names the page file."""
    known = set(store.suites()) | (set(host.suites.names()) if host is not None else set())
    if not NAME_PATTERN.fullmatch(suite) or (host is not None and suite not in known):
        raise unknown_name("suite", suite, known)


def check_formats(formats: Sequence[str]) -> list[str]:
    """The formats asked for, each once, in order; an unknown or missing one is one sentence."""
    for name in formats:
        if name not in LEADERBOARD_FORMATS:
            raise unknown_name("leaderboard format", name, LEADERBOARD_FORMATS)
    if not formats:
        raise UserError(f"no leaderboard format given; choose from {', '.join(LEADERBOARD_FORMATS)}")
    return list(dict.fromkeys(formats))


def write_leaderboard(
    store: RunSource, suite: str, out_dir: Path, host: Host | None = None, selection: str | None = None,
    formats: Sequence[str] = ("md",),
) -> tuple[Path, str]:
    """Render the suite's tables (finished and failed runs) under a selection rule and write ``out_dir/<suite>.<format>``
    for each of ``formats``; returns the first file written and the Markdown page."""
    paths, text = write_leaderboard_files(store, suite, out_dir, host, selection, formats)
    return paths[0], text


def write_leaderboard_files(
    store: RunSource, suite: str, out_dir: Path, host: Host | None = None, selection: str | None = None,
    formats: Sequence[str] = ("md",),
) -> tuple[list[Path], str]:
    """``write_leaderboard``, returning every file written (in the order of ``formats``) and the Markdown page."""
    # Rendering builds on this module's tables (pandas, and matplotlib for the page), hence the import here.
    from cdkd_bench.publish import render_formats

    wanted = check_formats(formats)
    check_suite_name(suite, store, host)
    runs = store.runs(suite=suite, status=None)
    texts = render_formats(runs, build_tables(runs, host, selection), suite, host, selection, ["md", *wanted])
    folder = writable_folder(out_dir, "leaderboard pages", "--out-dir")
    paths = []
    for name in wanted:
        path = folder / f"{suite}.{name}"
        write_text_atomically(path, texts[name])
        paths.append(path)
    return paths, texts["md"]
