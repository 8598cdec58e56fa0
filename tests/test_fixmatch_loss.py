"""FixMatch's unlabelled loss against Sohn et al.'s formula, computed independently with NumPy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from distillation_helpers import batches, real_pair

from cdkd_bench import Batch, MethodInfo, Outputs, Step
from cdkd_bench.testing import check_method, make_step
from cdkd_plugins.adaptation.fixmatch import FixMatch, fixmatch_loss, pseudo_labels

# Weak-view logits with known probabilities (exp(-200) underflows to exactly 0 in float32):
# row 0: (1/2, 1/2, 0) exactly -> at a threshold of 1/2, confident (ties go to the first class);
# row 1: 1 / (2 + e^-10) = 0.4999887 -> just below 1/2, not confident;
# row 2: confident in class 2; row 3: uniform over three classes (1/3 each).
WEAK = [[0.0, 0.0, -200.0], [0.0, 0.0, -10.0], [-1.0, 0.5, 6.0], [0.3, 0.3, 0.3]]
STRONG = [[1.0, -0.5, 0.2], [0.4, 2.0, -1.0], [0.0, 0.7, 1.5], [2.0, 0.1, -0.3]]
INFO = MethodInfo(num_classes=3, student_features=3, teacher_features=None, total_steps=1)


def numpy_fixmatch(weak: list[list[float]], strong: list[list[float]], threshold: float) -> float:
    """(1 / B) sum_b 1(max q_b >= tau) H(argmax q_b, softmax(strong_b)), q_b = softmax(weak_b) (Sohn et al., eq. 2)."""
    w = np.asarray(weak, dtype=np.float64)
    q = np.exp(w - w.max(axis=1, keepdims=True))
    q /= q.sum(axis=1, keepdims=True)
    s = np.asarray(strong, dtype=np.float64)
    log_p = s - s.max(axis=1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    total = 0.0
    for b in range(len(w)):
        if q[b].max() >= threshold:
            total += -log_p[b, int(q[b].argmax())]
    return total / len(w)


def test_a_probability_equal_to_the_threshold_counts_as_confident_and_one_just_below_does_not() -> None:
    probabilities = torch.tensor(WEAK).softmax(dim=1)
    assert probabilities[0].max().item() == 0.5 and probabilities[1].max().item() < 0.5  # the premises, exactly
    labels, mask = pseudo_labels(torch.tensor(WEAK), 0.5)
    assert mask.tolist() == [1.0, 0.0, 1.0, 0.0]
    assert labels.tolist()[:3] == [0, 0, 2]
    assert pseudo_labels(torch.tensor(WEAK), 0.4)[1].tolist() == [1.0, 1.0, 1.0, 0.0]
    assert pseudo_labels(torch.tensor(WEAK), 0.95)[1].tolist() == [0.0, 0.0, 1.0, 0.0]


@pytest.mark.parametrize("threshold", [0.0, 0.5, 0.95, 1.0])
def test_fixmatch_loss_matches_the_formula(threshold: float) -> None:
    got = fixmatch_loss(torch.tensor(WEAK), torch.tensor(STRONG), threshold).item()
    assert got == pytest.approx(numpy_fixmatch(WEAK, STRONG, threshold), rel=1e-6, abs=1e-9)


def test_the_loss_is_averaged_over_the_whole_batch_not_over_the_confident_images() -> None:
    # one confident image of four: its cross-entropy divided by 4
    s = np.asarray(STRONG[2], dtype=np.float64)
    only = -(s[2] - np.log(np.exp(s).sum()))
    assert fixmatch_loss(torch.tensor(WEAK), torch.tensor(STRONG), 0.95).item() == pytest.approx(only / 4, rel=1e-6)
    assert fixmatch_loss(torch.tensor(WEAK), torch.tensor(STRONG), 1.0).item() == 0.0  # nothing confident: no loss


def _views_step(weak: torch.Tensor, strong: torch.Tensor) -> Step:
    """A step whose student returns ``weak`` on the weak view of the target batch and ``strong`` on its strong view."""
    n = len(weak)
    source, target = Batch(torch.zeros(n, 3, 4, 4), torch.zeros(n, dtype=torch.long)), Batch(torch.ones(n, 3, 4, 4), None)
    images = {"weak": torch.full((n, 3, 4, 4), 2.0), "strong": torch.full((n, 3, 4, 4), 3.0)}
    outputs = {id(images["weak"]): weak, id(images["strong"]): strong}

    def student(x: torch.Tensor) -> Outputs:
        logits = outputs[id(x)]  # a KeyError if the component runs the student on any other batch
        return Outputs(logits, logits)

    return Step(source, target, 0.5, student, None, lambda _domain, view, plain: Batch(images[view], plain.y, plain.index))


def test_component_reads_weak_and_strong_views_and_no_gradient_flows_through_the_pseudo_labels() -> None:
    weak, strong = torch.tensor(WEAK, requires_grad=True), torch.tensor(STRONG, requires_grad=True)
    terms = FixMatch(FixMatch.Hparams(weight=2.0, threshold=0.5), INFO).loss(_views_step(weak, strong))
    assert list(terms) == ["fixmatch"]
    assert terms["fixmatch"].item() == pytest.approx(2.0 * numpy_fixmatch(WEAK, STRONG, 0.5), rel=1e-6)
    terms["fixmatch"].backward()
    assert weak.grad is None
    assert strong.grad is not None
    assert strong.grad[[0, 2]].abs().sum() > 0 and strong.grad[[1, 3]].abs().sum() == 0  # masked-out images give nothing


def test_on_a_real_student_the_strong_view_is_trained_towards_the_weak_views_labels() -> None:
    student, _teacher, info = real_pair()
    source, target = batches()
    calls: list[str] = []

    def view(name: str, scale: float):  # type: ignore[no-untyped-def]
        def transform(x: torch.Tensor) -> torch.Tensor:
            calls.append(name)
            return scale * x.flip(3)
        return transform

    step = make_step(student, None, source, target, views={"weak": view("weak", 1.0), "strong": view("strong", 0.5)})
    terms = FixMatch(FixMatch.Hparams(threshold=0.0), info).loss(step)  # threshold 0: every image is masked in
    assert sorted(calls) == ["strong", "weak"]
    weak, strong = step.student("target", "weak").logits, step.student("target", "strong").logits
    expected = numpy_fixmatch(weak.tolist(), strong.tolist(), 0.0)
    assert terms["fixmatch"].item() == pytest.approx(expected, rel=1e-5)
    terms["fixmatch"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(torch.isfinite(p.grad).all() for p in student.parameters() if p.grad is not None)


def test_declarations_and_defaults() -> None:
    assert FixMatch.views == {"target": ("weak", "strong")}
    assert FixMatch.uses_target and not FixMatch.needs_teacher and FixMatch.family == "adaptation"
    hp = FixMatch.Hparams()
    assert (hp.weight, hp.threshold) == (1.0, 0.95)
    assert FixMatch.Hparams.__dataclass_fields__["threshold"].metadata["search"] == (0.7, 0.99)


def test_conforms_to_the_contract() -> None:
    check_method(FixMatch)


@pytest.mark.parametrize("bad", [{"threshold": 1.5}, {"threshold": -0.1}, {"weight": -1.0}])
def test_rejects_invalid_hparams(bad: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        FixMatch.Hparams(**bad)
