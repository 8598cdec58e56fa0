"""Label regimes: the engine reveals exactly the target labels uda / ssda-K / sup allow, and no others."""

from __future__ import annotations

import pytest
import torch
from helpers import SpyOnTarget, TestMethods

from cdkd_bench.engine import EngineSettings, execute
from cdkd_bench.errors import UserError
from cdkd_bench.grid import GridRequest, expand
from cdkd_bench.label_regimes import VALIDATION_SHOTS, labelled_target_indices, parse_regime
from cdkd_bench.plugins import load_host
from cdkd_bench.task_data import load_task_data

# The target is transductive under uda (every image trains unlabelled and is scored); a labelled regime must not be.
TASK = "printed_to_handwritten"


@pytest.fixture(scope="module")
def test_host():
    return load_host(extra_plugins=[("test-methods", TestMethods())])


def spy_spec(host, regime, recipe="spy", seed=0):
    specs = expand(host, GridRequest(tasks=(TASK,), recipes=(recipe,), seeds=(seed,), budget="smoke", label_regime=regime))
    return next(s for s in specs if s.recipe == recipe)


def run_spy(host, spec, cache_dir):
    SpyOnTarget.seen_target_labels.clear()
    SpyOnTarget.seen_labelled.clear()
    result = execute(spec, host, EngineSettings(cache_dir=cache_dir, device="cpu"))
    return result, list(SpyOnTarget.seen_target_labels), list(SpyOnTarget.seen_labelled)


@pytest.mark.parametrize("text, shots", [("uda", None), ("sup", None), ("ssda-1", 1), ("ssda-3", 3), ("ssda-10", 10)])
def test_regime_names_parse(text, shots) -> None:
    regime = parse_regime(text)
    assert regime.name == text and regime.shots == shots
    assert regime.reveals_target_labels == (text != "uda")


@pytest.mark.parametrize("text", ["ssda-0", "ssda", "ssda-3x", "semi", "UDA", "ssda--1"])
def test_unknown_regimes_are_one_sentence(text) -> None:
    with pytest.raises(UserError) as caught:
        parse_regime(text)
    assert "\n" not in str(caught.value) and "ssda-K" in str(caught.value)


def test_ssda_shots_are_k_per_class_from_the_train_split_and_depend_only_on_seed_and_domain() -> None:
    labels = torch.tensor([0] * 7 + [1] * 5 + [2] * 9)
    regime = parse_regime("ssda-2")
    shots, validation = labelled_target_indices(regime, labels, "some.domain", seed=0)
    assert torch.bincount(labels[shots]).tolist() == [2, 2, 2]
    assert torch.bincount(labels[validation]).tolist() == [VALIDATION_SHOTS] * 3
    assert not set(shots.tolist()) & set(validation.tolist())  # validation images are never trained on
    again = labelled_target_indices(regime, labels, "some.domain", seed=0)
    assert torch.equal(shots, again[0]) and torch.equal(validation, again[1])
    others = [labelled_target_indices(regime, labels, "some.domain", seed=s)[0] for s in range(1, 6)]
    assert any(not torch.equal(shots, o) for o in others)
    sup, none = labelled_target_indices(parse_regime("sup"), labels, "some.domain", seed=0)
    assert sup.tolist() == list(range(len(labels))) and len(none) == 0
    assert all(len(part) == 0 for part in labelled_target_indices(parse_regime("uda"), labels, "some.domain", seed=0))


def test_uda_reveals_no_target_label(test_host, cache_dir) -> None:
    result, unlabelled, labelled = run_spy(test_host, spy_spec(test_host, "uda"), cache_dir)
    assert unlabelled and all(y is None for y in unlabelled)
    assert labelled and all(batch is None for batch in labelled)
    assert "train_loss.target_ce" not in result["metrics"]


@pytest.mark.parametrize("regime", ["ssda-2", "sup"])
def test_a_labelled_regime_reveals_exactly_its_images_and_scores_on_the_test_split(test_host, cache_dir, regime) -> None:
    spec = spy_spec(test_host, regime)
    assert spec.label_regime == regime and spec.evaluation == "test split"
    assert spec.run_id != spy_spec(test_host, "uda").run_id
    data = load_task_data(test_host, spec, EngineSettings(cache_dir=cache_dir, device="cpu"), torch.device("cpu"))
    allowed, validation = labelled_target_indices(parse_regime(regime), data.target_train.y, spec.target, spec.seed)
    result, unlabelled, labelled = run_spy(test_host, spec, cache_dir)
    assert all(y is None for y in unlabelled)  # the unlabelled target batch stays unlabelled
    seen = set()
    for index, y in labelled:  # a batch's index is its position in the labelled split: the allowed images, in order
        assert int(index.max()) < len(allowed)
        assert torch.equal(y, data.target_train.y[allowed[index]])
        seen |= set(allowed[index].tolist())
    if regime == "ssda-2":
        assert seen == set(allowed.tolist()) and len(allowed) == 2 * 10  # the smoke budget's steps go round all 20 shots
        assert all("target_val.acc" in checkpoint for checkpoint in result["metrics"]["checkpoints"])
        assert not seen & set(validation.tolist())
    else:
        assert "target_val.acc" not in result["metrics"]
    assert result["metrics"]["train_loss.target_ce"] > 0
    assert result["metrics"]["target_test.images"] == len(data.target_test)


def test_every_recipe_of_a_seed_gets_the_same_shots(test_host, cache_dir) -> None:
    seen = []
    for recipe in ("spy", "kd+spy"):
        _, _, labelled = run_spy(test_host, spy_spec(test_host, "ssda-1", recipe), cache_dir)
        seen.append([(index.tolist(), y.tolist()) for index, y in labelled])
    # The same shots, drawn into the same batches step by step: the subset and the batch order depend on the seed only.
    assert seen[0] == seen[1]
    assert sorted({label for _, labels in seen[0] for label in labels}) == list(range(10))


def test_more_shots_than_the_smallest_class_is_refused_before_training(test_host) -> None:
    with pytest.raises(UserError, match=r"asks for 5000 labelled images per class.*has only \d+ train images") as caught:
        spy_spec(test_host, "ssda-5000")
    assert "\n" not in str(caught.value)


def test_vmapped_seeds_are_refused_under_a_labelled_regime(test_host) -> None:
    with pytest.raises(UserError, match="vmapped"):
        expand(test_host, GridRequest(tasks=(TASK,), recipes=("kd",), seeds=(0, 1), budget="smoke", label_regime="sup",
                                      vmap_seeds=True))


def test_an_owned_step_gets_the_labelled_target_cross_entropy_inside_source_ce() -> None:
    import torch.nn.functional as F
    from torch import nn

    from cdkd_bench.api import Batch, Outputs, Step
    from cdkd_bench.training import _Control

    torch.manual_seed(0)
    net = nn.Linear(4, 3)

    def forward(x):
        return Outputs(logits=net(x), features=x)

    source = Batch(torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1]), torch.arange(5))
    labelled = Batch(torch.randn(3, 4), torch.tensor([2, 2, 1]), torch.arange(3))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    expected = F.cross_entropy(net(source.x), source.y) + F.cross_entropy(net(labelled.x), labelled.y)
    with_labels = _Control(Step(source, Batch(source.x[:0], None), 0.0, forward, labelled_target=labelled), net, [], optimizer, 0, True)
    assert torch.allclose(with_labels.source_ce(), expected)
    without = _Control(Step(source, Batch(source.x[:0], None), 0.0, forward), net, [], optimizer, 0, True)
    assert torch.allclose(without.source_ce(), F.cross_entropy(net(source.x), source.y))
