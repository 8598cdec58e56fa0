"""MCD: the discrepancy against NumPy, and each of the paper's three phases updating exactly its parameter set
through the engine's own control object."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from cdkd_bench import Batch, Method, MethodInfo, Step
from cdkd_bench.data import Split
from cdkd_bench.testing import TinyNet, check_method, make_step
from cdkd_bench.training import _Control, fit, make_optimizer, optimiser_groups
from cdkd_plugins.adaptation.entmin import EntMin
from cdkd_plugins.adaptation.mcd import MCD, classifier_discrepancy

NUM_CLASSES, FEATURES, IMAGE = 3, 8, 16
INFO = MethodInfo(num_classes=NUM_CLASSES, student_features=FEATURES, teacher_features=None, total_steps=1)
HEAD = {"student.fc.weight", "student.fc.bias"}
CLASSIFIER2 = {"mcd.classifier2.weight", "mcd.classifier2.bias"}
OTHER = {"other.scale"}


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def cross_entropy(z: np.ndarray, labels: np.ndarray) -> float:
    log_p = np.log(softmax(z))
    return float(-np.mean([log_p[i, y] for i, y in enumerate(labels)]))


def discrepancy(z1: np.ndarray, z2: np.ndarray) -> float:
    """Saito et al. eq. 1: the mean over images and classes of |p1 - p2|."""
    return float(np.abs(softmax(z1) - softmax(z2)).mean())


def entropy(z: np.ndarray) -> float:
    p = softmax(z)
    return float(-(p * np.log(p)).sum(axis=1).mean())


def test_classifier_discrepancy_matches_the_formula() -> None:
    z1 = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-1.0, 3.0, 0.0]])
    z2 = np.array([[0.0, 1.5, -0.5], [1.0, -2.0, 0.3], [-1.0, 3.0, 0.0]])
    got = classifier_discrepancy(torch.tensor(z1, dtype=torch.float32), torch.tensor(z2, dtype=torch.float32)).item()
    assert got == pytest.approx(discrepancy(z1, z2), rel=1e-6)
    # hand-worked: (1, 0) against (0, 1) differs by 1 in both classes; identical predictions by 0
    assert classifier_discrepancy(torch.tensor([[50.0, 0.0]]), torch.tensor([[0.0, 50.0]])).item() == pytest.approx(1.0)
    assert classifier_discrepancy(torch.tensor(z1), torch.tensor(z1)).item() == 0.0


class OtherWithParameter(Method):
    """Another component of the recipe, with a parameter of its own: a scaled target entropy."""

    name = "other"
    family = "adaptation"
    uses_target = True

    @dataclass(frozen=True)
    class Hparams:
        pass

    def __init__(self, hparams, info) -> None:  # type: ignore[no-untyped-def]
        super().__init__(hparams, info)
        self.scale = nn.Parameter(torch.tensor(0.7))

    def loss(self, step: Step) -> dict[str, torch.Tensor]:
        p = step.student("target").logits.softmax(1)
        return {"scaled_entropy": self.scale**2 * -(p * p.log()).sum(1).mean()}


class RecordingControl(_Control):
    """The engine's control, recording each loss it is handed (with the numbers to recompute it) and what each update changed."""

    def __init__(self, step: Step, student: nn.Module, mcd: MCD, others: list[Method], optimizer: torch.optim.Optimizer) -> None:
        super().__init__(step, student, others, optimizer, 0, True)
        self.mcd = mcd
        self.named = {f"student.{n}": p for n, p in student.named_parameters()}
        self.named.update({f"mcd.{n}": p for n, p in mcd.named_parameters()})
        for other in others:
            self.named.update({f"{other.name}.{n}": p for n, p in other.named_parameters()})
        self.losses: list[tuple[float, dict[str, np.ndarray]]] = []
        self.changed: list[set[str]] = []
        self.events: list[str] = []

    def backward(self, loss: torch.Tensor) -> None:
        # Running the student again here is harmless: in train mode its outputs depend on the weights and the batch only.
        with torch.no_grad():
            numbers = {
                "source": self.step.student("source").features.double().numpy(),
                "target": self.step.student("target").features.double().numpy(),
                "w1": self.student.fc.weight.double().numpy(), "b1": self.student.fc.bias.double().numpy(),
                "w2": self.mcd.classifier2.weight.double().numpy(), "b2": self.mcd.classifier2.bias.double().numpy(),
            }
        self.losses.append((loss.item(), numbers))
        self.events.append("backward")
        super().backward(loss)

    def update(self, parameters=None) -> None:  # type: ignore[no-untyped-def]
        before = {name: p.detach().clone() for name, p in self.named.items()}
        super().update(parameters)
        self.changed.append({name for name, p in self.named.items() if not torch.equal(p.detach(), before[name])})
        assert all(p.grad is None for p in self.named.values()), "update must leave no gradient behind"
        self.events.append("update")

    def recompute(self) -> None:
        super().recompute()
        self.events.append("recompute")


def one_mcd_step(generator_steps: int, seed: int = 0) -> tuple[RecordingControl, dict[str, torch.Tensor], torch.Tensor, nn.Module]:
    torch.manual_seed(seed)
    student = TinyNet(NUM_CLASSES, (4, 6, FEATURES), (1, 2, 2)).train()
    mcd, other = MCD(MCD.Hparams(generator_steps=generator_steps), INFO), OtherWithParameter(OtherWithParameter.Hparams(), INFO)
    optimizer = make_optimizer(optimiser_groups(student, [mcd, other], lr=1e-2, weight_decay=0.0, backbone_lr_mult=1.0))
    labels = torch.arange(6) % NUM_CLASSES
    source = Batch(torch.randn(6, 3, IMAGE, IMAGE), labels, torch.arange(6))
    target = Batch(torch.randn(6, 3, IMAGE, IMAGE) + 1.0, None, torch.arange(6))
    control = RecordingControl(make_step(student, None, source, target), student, mcd, [other], optimizer)
    terms = mcd.update(control)
    return control, terms, labels, student


@pytest.mark.parametrize("generator_steps", [1, 4])
def test_each_phase_updates_exactly_its_parameter_set(generator_steps: int) -> None:
    control, _terms, _labels, student = one_mcd_step(generator_steps)
    everything = set(control.named)
    generator = {f"student.{n}" for n, _ in student.named_parameters()} - HEAD
    assert len(generator) == 12 and HEAD <= everything  # three stages of conv + batch-norm weights and biases, then fc
    assert control.events == ["backward", "update", "recompute"] * (2 + generator_steps)
    assert control.changed[0] == everything                       # A: G, F1, F2 and the other component's parameter
    assert control.changed[1] == HEAD | CLASSIFIER2                # B: the two classifiers only
    for changed in control.changed[2:]:                            # C: the generator only, num_k times
        assert changed == generator
    assert len(control.changed) == 2 + generator_steps


def test_each_phase_minimises_the_papers_objective() -> None:
    control, terms, labels, _student = one_mcd_step(generator_steps=2)
    y = labels.numpy()

    def logits(n: dict[str, np.ndarray], domain: str) -> tuple[np.ndarray, np.ndarray]:
        return n[domain] @ n["w1"].T + n["b1"], n[domain] @ n["w2"].T + n["b2"]

    (loss_a, a), (loss_b, b), *phase_c = control.losses
    s1, s2 = logits(a, "source")
    t1, _ = logits(a, "target")
    expected_a = cross_entropy(s1, y) + cross_entropy(s2, y) + 0.7**2 * entropy(t1)  # the other component's term counts
    assert loss_a == pytest.approx(expected_a, rel=1e-5)
    s1, s2 = logits(b, "source")
    t1, t2 = logits(b, "target")
    assert loss_b == pytest.approx(cross_entropy(s1, y) + cross_entropy(s2, y) - discrepancy(t1, t2), rel=1e-5)
    assert len(phase_c) == 2
    for loss_c, c in phase_c:
        assert loss_c == pytest.approx(discrepancy(*logits(c, "target")), rel=1e-5)
    # B saw the weights A left; C the classifiers B left (the recomputation happened)
    assert not np.array_equal(a["w1"], b["w1"]) and not np.array_equal(b["w2"], phase_c[0][1]["w2"])
    assert np.array_equal(phase_c[0][1]["w1"], phase_c[1][1]["w1"]) and not np.array_equal(phase_c[0][1]["target"], phase_c[1][1]["target"])
    s1, s2 = logits(a, "source")
    assert set(terms) == {"source_ce", "classifier2_ce", "discrepancy", "generator_discrepancy"}
    assert terms["source_ce"].item() == pytest.approx(cross_entropy(s1, y), rel=1e-5)
    assert terms["classifier2_ce"].item() == pytest.approx(cross_entropy(s2, y), rel=1e-5)
    assert terms["discrepancy"].item() == pytest.approx(discrepancy(*logits(b, "target")), rel=1e-5)
    assert terms["generator_discrepancy"].item() == pytest.approx(phase_c[-1][0], rel=1e-6)
    assert all(not v.requires_grad for v in terms.values())


def test_the_second_classifier_is_trained_with_the_student() -> None:
    mcd = MCD(MCD.Hparams(), INFO)
    assert isinstance(mcd.classifier2, nn.Linear) and (mcd.classifier2.in_features, mcd.classifier2.out_features) == (FEATURES, 3)
    (group,) = mcd.param_groups()
    assert {id(p) for p in group["params"]} == {id(p) for p in mcd.classifier2.parameters()}


def test_one_engine_step_logs_the_owned_terms() -> None:
    torch.manual_seed(0)
    student = TinyNet(NUM_CLASSES, (4, 6, FEATURES), (1, 2, 2))
    source = Split(torch.randn(12, 3, IMAGE, IMAGE), torch.arange(12) % NUM_CLASSES)
    target = Split(torch.randn(12, 3, IMAGE, IMAGE), torch.arange(12) % NUM_CLASSES)
    losses = fit(student, [MCD(MCD.Hparams(generator_steps=2), INFO), EntMin(EntMin.Hparams(), INFO)], source, target,
                 steps=1, batch_size=6, lr=1e-3, weight_decay=0.0, seed=0)
    assert set(losses) == {"mcd.source_ce", "mcd.classifier2_ce", "mcd.discrepancy", "mcd.generator_discrepancy"}
    assert all(np.isfinite(v) for v in losses.values())


def test_loss_is_never_called_for_a_component_that_owns_the_step() -> None:
    assert MCD.owns_step and MCD.uses_target and not MCD.needs_teacher and MCD.family == "adaptation"
    with pytest.raises(RuntimeError, match="owns the training step"):
        MCD(MCD.Hparams(), INFO).loss(None)  # type: ignore[arg-type]


def test_conforms_to_the_contract() -> None:
    assert MCD.Hparams().generator_steps == 4
    check_method(MCD)


@pytest.mark.parametrize("bad", [0, -1])
def test_rejects_invalid_hparams(bad: int) -> None:
    with pytest.raises(ValueError, match="generator_steps"):
        MCD.Hparams(generator_steps=bad)
