"""The built-in selection rules: the label-free scores they read, the checkpoint each picks, the tables
built under them, and the refusal of a rule whose metric older runs did not record."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from cdkd_bench import Selector
from cdkd_bench.cli import main
from cdkd_bench.errors import UserError
from cdkd_bench.evaluation import SND_TEMPERATURE, label_free_scores
from cdkd_bench.leaderboard import build_tables, render_markdown
from cdkd_bench.plugins import Host
from cdkd_bench.selection import check_selectable, choose_checkpoint
from cdkd_bench.spec import RunSpec, TeacherSpec
from cdkd_bench.store import Store, StoredRun
from cdkd_bench.testing import check_selector

# --------------------------------------------------------------------------- the scores, by the papers' formulas

LOGITS = [[2.0, 0.5, -1.0], [0.1, 1.5, 0.3], [-0.5, 0.2, 2.5], [1.0, 1.0, 0.0], [3.0, -2.0, 0.5], [0.0, -0.3, 0.4]]


def _softmax(row: list[float]) -> list[float]:
    top = max(row)
    exps = [math.exp(v - top) for v in row]
    return [e / sum(exps) for e in exps]


def _entropy(p: list[float]) -> float:
    return -sum(v * math.log(v) for v in p if v > 0)


def _expected_scores(logits: list[list[float]]) -> dict[str, float]:
    """Entropy, IM, SND and BNM written out from their definitions, in double precision, without torch."""
    probs = [_softmax(row) for row in logits]
    n, classes = len(probs), len(probs[0])
    mean_entropy = sum(_entropy(p) for p in probs) / n
    mean_prediction = [sum(p[c] for p in probs) / n for c in range(classes)]
    unit = [[v / math.sqrt(sum(x * x for x in p)) for v in p] for p in probs]
    densities = []
    for i in range(n):
        # Cosine similarity to every other image (never itself), sharpened by the temperature.
        similarities = [sum(a * b for a, b in zip(unit[i], unit[j], strict=True)) / SND_TEMPERATURE for j in range(n) if j != i]
        densities.append(_entropy(_softmax(similarities)))
    singular_values = np.linalg.svd(np.array(probs), compute_uv=False)
    return {"entropy": mean_entropy, "info_max": _entropy(mean_prediction) - mean_entropy, "snd": sum(densities) / n,
            "bnm": float(singular_values.sum()) / n}


def test_label_free_scores_match_the_papers_formulas() -> None:
    scores = label_free_scores(torch.tensor(LOGITS))
    expected = _expected_scores(LOGITS)
    assert set(scores) == set(expected)
    for name, value in expected.items():
        assert scores[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name


def test_label_free_scores_on_identical_predictions_have_closed_forms() -> None:
    # Every image predicts the same p: the neighbour distribution is uniform over the n - 1 others, the mean
    # prediction is p (no information gained), and the probability matrix has rank one with norm |p| sqrt(n).
    n = 5
    logits = torch.tensor([[1.0, 0.0, -1.0]]).repeat(n, 1)
    p = _softmax([1.0, 0.0, -1.0])
    scores = label_free_scores(logits)
    assert scores["snd"] == pytest.approx(math.log(n - 1), rel=1e-5)
    assert scores["info_max"] == pytest.approx(0.0, abs=1e-6)
    assert scores["entropy"] == pytest.approx(_entropy(p), rel=1e-5)
    assert scores["bnm"] == pytest.approx(math.sqrt(sum(v * v for v in p)) / math.sqrt(n), rel=1e-5)


# --------------------------------------------------------------------------- which checkpoint each rule picks

KEYS = {"source_val": "source_val.acc", "oracle": "target_test.acc", "entropy": "target_train.entropy",
        "info_max": "target_train.info_max", "snd": "target_train.snd", "bnm": "target_train.bnm"}


def _checkpoint(step: int, **overrides: float) -> dict[str, Any]:
    """A checkpoint whose every score is the same as its neighbours' unless overridden."""
    checkpoint: dict[str, Any] = {"step": step, "source_val.acc": 90.0, "target_test.acc": 60.0, "target_test.balanced_acc": 60.0,
                                  "target_test.per_class_acc": [60.0, 60.0], "teacher_student_agreement": 70.0,
                                  "target_train.entropy": 0.5, "target_train.info_max": 0.4, "target_train.snd": 2.0,
                                  "target_train.bnm": 0.6}
    return {**checkpoint, **{KEYS[rule]: value for rule, value in overrides.items()}}


def _history(rule: str, values: list[float]) -> list[dict[str, Any]]:
    return [_checkpoint(100 * (i + 1), **{rule: v}) for i, v in enumerate(values)]


CASES = [
    # rule, its score at each checkpoint, the index it must pick
    ("source_val", [80.0, 97.0, 95.0, 90.0], 1),
    ("source_val", [80.0, 95.0, 95.0, 90.0], 2),
    ("oracle", [75.0, 70.0, 65.0, 60.0], 0),
    ("oracle", [60.0, 70.0, 65.0, 70.0], 3),
    ("entropy", [0.9, 0.1, 0.3, 0.5], 1),  # the lowest entropy wins
    ("entropy", [0.2, 0.9, 0.2, 0.5], 2),
    ("info_max", [0.1, 0.8, 0.3, 0.2], 1),
    ("info_max", [0.1, 0.8, 0.3, 0.8], 3),
    ("snd", [3.6, 3.5, 3.4, 3.0], 0),
    ("snd", [3.0, 3.5, 3.5, 3.4], 2),
    ("bnm", [0.4, 0.7, 0.6, 0.5], 1),
    ("bnm", [0.7, 0.4, 0.7, 0.5], 2),
]


@pytest.mark.parametrize("rule, values, expected", CASES)
def test_each_rule_picks_its_best_checkpoint_and_the_latest_of_ties(host: Host, rule: str, values: list[float], expected: int) -> None:
    assert host.selectors.get(rule).choose(_history(rule, values)) == expected


@pytest.mark.parametrize("rule", KEYS)
def test_each_rule_declares_what_it_reads_and_passes_the_conformance_checks(host: Host, rule: str) -> None:
    selector = host.selectors.get(rule)
    assert selector.needs == (KEYS[rule],)
    assert selector.oracle is (rule == "oracle")
    assert not selector.default and selector.description
    check_selector(selector)


def test_a_checkpoint_without_a_usable_score_never_wins(host: Host) -> None:
    snd = host.selectors.get("snd")
    history = _history("snd", [3.0, float("nan"), 1.0])
    assert snd.choose(history) == 0
    assert snd.choose([{"step": 1}, {"step": 2}]) == 1  # nothing to rank: the last checkpoint, as `last` would


# --------------------------------------------------------------------------- stored runs and tables


def _spec(recipe: str, seed: int) -> RunSpec:
    teacher = TeacherSpec(suite="embedded", source="embedded.printed", source_version=2, arch="resnet18_w16_32px",
                          teacher_recipe="source", pretrained=False, num_classes=10, image_size=32, steps=20, batch_size=32,
                          lr=0.01, weight_decay=5e-4, seed=seed, numerics="cpu fp32 1 thread", source_data="c0ffee")
    return RunSpec(suite="embedded", task="embedded.printed_to_handwritten", source="embedded.printed", target="embedded.handwritten",
                   target_version=2, teacher=teacher, student_arch="resnet10_w8_32px", recipe=recipe, hparams={recipe: {}},
                   method_versions={recipe: 1}, label_regime="uda", budget="smoke", steps=10, batch_size=32, lr=0.01,
                   weight_decay=5e-4, seed=seed, numerics="cpu fp32 1 thread", eval_points=2, target_data="beef")


# Per recipe, (source-val acc, target acc) at each of two checkpoints: source_only peaks on both at the end,
# kd's source accuracy peaks at its first checkpoint, where its target accuracy is lower.
CHECKPOINTS = {"source_only": [(90.0, 40.0), (95.0, 45.0)], "kd": [(97.0, 55.0), (93.0, 65.0)]}


def _metrics(recipe: str, seed: int, recorded_since_today: bool = True) -> dict[str, Any]:
    history = []
    for step, (source_val, target) in enumerate(CHECKPOINTS[recipe], start=1):
        checkpoint = {**_checkpoint(5 * step), "source_val.acc": source_val, "target_test.acc": target + seed}
        if not recorded_since_today:  # as stored by a cdkd-bench that had no SND or BNM yet
            del checkpoint["target_train.snd"], checkpoint["target_train.bnm"]
        history.append(checkpoint)
    return {**history[-1], "checkpoints": history, "teacher.target_test.acc": 80.0, "teacher.source_val.acc": 99.0}


def _stored(recipe: str, seed: int, status: str = "done", recorded_since_today: bool = True) -> StoredRun:
    metrics = _metrics(recipe, seed, recorded_since_today) if status == "done" else {}
    return StoredRun(f"{recipe}-{seed}", status, _spec(recipe, seed), metrics, {}, {}, None if status == "done" else "boom", "")


def _fill(path: Path, recorded_since_today: bool = True) -> Store:
    store = Store(path)
    for recipe in CHECKPOINTS:
        for seed in (0, 1):
            store.record(_spec(recipe, seed), {"status": "done", "metrics": _metrics(recipe, seed, recorded_since_today)})
    return store


def test_choose_checkpoint_lays_the_chosen_checkpoint_over_the_run_metrics(host: Host) -> None:
    run = _stored("kd", 0)
    chosen = choose_checkpoint(run, host.selectors.get("source_val"))
    assert chosen["target_test.acc"] == 55.0 and chosen["step"] == 5
    assert chosen["teacher.target_test.acc"] == 80.0  # run-level numbers stay
    assert choose_checkpoint(run, None)["target_test.acc"] == 65.0  # no rule: the end of training


def test_tables_under_source_val_and_last_differ_where_the_histories_say(host: Host, tmp_path: Path) -> None:
    runs = _fill(tmp_path / "r.sqlite").runs()
    task = "embedded.printed_to_handwritten"

    def rows(rule: str) -> dict[str, dict[int, float]]:
        [table] = build_tables(runs, host, rule)
        assert not any("ORACLE" in flag for flag in table.flags)
        return {row.name: dict(row.values[task]) for row in table.rows}

    last, source_val = rows("last"), rows("source_val")
    assert last["kd"] == {0: 65.0, 1: 66.0} and source_val["kd"] == {0: 55.0, 1: 56.0}
    assert last["source_only"] == source_val["source_only"] == {0: 45.0, 1: 46.0}


def test_a_table_under_the_oracle_is_flagged(host: Host, tmp_path: Path) -> None:
    [table] = build_tables(_fill(tmp_path / "r.sqlite").runs(), host, "oracle")
    assert table.protocol.selection == "oracle"
    assert any(flag.startswith("ORACLE SELECTION") for flag in table.flags)
    assert "ORACLE SELECTION: rule `oracle`" in render_markdown([table], "t", host)


def test_a_rule_needing_a_metric_some_runs_lack_is_refused_in_one_sentence(host: Host) -> None:
    runs = [_stored("kd", 0), _stored("kd", 1, recorded_since_today=False), _stored("source_only", 0),
            _stored("source_only", 1, status="failed")]  # a failed run recorded nothing, and is no reason to refuse
    rules = [entry.value for entry in host.selectors]
    with pytest.raises(UserError) as refused:
        check_selectable(runs, host.selectors.get("snd"), rules)
    message = str(refused.value)
    assert message.startswith("selection rule 'snd' reads target_train.snd, which 1 of the 3 finished runs did not record "
                              "(they were trained by an older cdkd-bench); choose another rule (last, ")
    assert "source_val" in message and "entropy" in message and "info_max" in message
    assert "oracle" not in message.split("choose another rule")[1] and "bnm" not in message.split("choose another rule")[1]
    assert "\n" not in message and message.count(". ") == 0
    for fine in ("last", "source_val", "entropy", "info_max", "oracle"):
        check_selectable(runs, host.selectors.get(fine), rules)
    check_selectable([r for r in runs if r.run_id != "kd-1"], host.selectors.get("snd"), rules)


def test_a_rule_reading_several_missing_metrics_names_them_all() -> None:
    both = Selector("both", lambda history: 0, needs=("target_train.snd", "target_train.bnm"))
    with pytest.raises(UserError, match=r"^selection rule 'both' reads target_train\.snd and target_train\.bnm, which all 2 "
                                        r"finished runs did not record .*; train them again$"):
        check_selectable([_stored("kd", 0, recorded_since_today=False), _stored("kd", 1, recorded_since_today=False)], both)


@pytest.mark.parametrize("rule", ["snd", "bnm"])
def test_the_leaderboard_refuses_a_rule_the_stored_runs_cannot_serve(rule: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    _fill(tmp_path / "old.sqlite", recorded_since_today=False)
    argv = ["leaderboard", "--store", "old.sqlite", "--out-dir", "boards"]
    assert main([*argv, "--selection", rule]) == 2
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines == [f"cdkd-bench: error: selection rule {rule!r} reads target_train.{rule}, which all 4 finished runs did not record "
                     "(they were trained by an older cdkd-bench); choose another rule (last, entropy, info_max, source_val) "
                     "or train them again"], err
    assert "Traceback" not in err and not out
    assert not (tmp_path / "boards").exists()
    # A rule the same runs can serve renders them.
    assert main([*argv, "--selection", "source_val"]) == 0
    assert "selection rule `source_val`" in (tmp_path / "boards" / "embedded.md").read_text()
