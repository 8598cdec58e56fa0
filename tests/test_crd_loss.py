"""CRD against Tian et al.'s NCE objective (and its softmax variant), the memory banks and the negatives, checked independently with NumPy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from distillation_helpers import VIT_STUDENT, assert_only_the_student_learns, assert_rejects_hparams, batches, hparam_defaults, real_pair

from cdkd_bench import Batch
from cdkd_bench.testing import check_method, make_step
from cdkd_plugins.methods import crd as crd_module
from cdkd_plugins.methods.crd import CRD, crd_loss, sample_negatives, update_bank


def _unit(rows: list[list[float]]) -> np.ndarray:
    a = np.asarray(rows, dtype=np.float64)
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


ANCHOR = _unit([[1.0, 0.2, -0.3], [0.1, -1.0, 0.4]])
POSITIVE = _unit([[0.8, 0.5, -0.1], [-0.2, -0.9, 0.1]])
NEGATIVES = np.stack([_unit([[0.0, 1.0, 0.0], [-1.0, 0.3, 0.2]]), _unit([[0.5, 0.5, 0.5], [0.3, 0.1, -1.0]])])  # (B=2, N=2, D=3)


def numpy_nce(anchor, positive, negatives, tau: float, bank_size: int, z: float | None) -> float:
    """mean_b [-log h(pos) - sum_k log(1 - h(neg_k))], h = e / (e + N/M), e = exp(a.x / tau) / Z."""
    batch, count = negatives.shape[0], negatives.shape[1]
    if z is None:  # Z = M * mean of exp(score / tau) over all positive and negative scores
        scores = [anchor[b] @ positive[b] for b in range(batch)] + [anchor[b] @ negatives[b, k] for b in range(batch) for k in range(count)]
        z = bank_size * sum(math.exp(s / tau) for s in scores) / len(scores)
    noise = count / bank_size
    total = 0.0
    for b in range(batch):
        e = math.exp(float(anchor[b] @ positive[b]) / tau) / z
        total -= math.log(e / (e + noise))
        for k in range(count):
            e = math.exp(float(anchor[b] @ negatives[b, k]) / tau) / z
            total -= math.log(1.0 - e / (e + noise))
    return total / batch


def numpy_softmax(anchor, positive, negatives, tau: float) -> float:
    total = 0.0
    for b in range(len(anchor)):
        pos = math.exp(float(anchor[b] @ positive[b]) / tau)
        neg = sum(math.exp(float(anchor[b] @ n) / tau) for n in negatives[b])
        total -= math.log(pos / (pos + neg))
    return total / len(anchor)


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.float64)


@pytest.mark.parametrize(("tau", "z"), [(0.07, 50.0), (0.5, 3.0), (1.0, 0.7)])
def test_nce_matches_the_papers_objective_with_a_given_partition(tau: float, z: float) -> None:
    got = crd_loss(_t(ANCHOR), _t(POSITIVE), _t(NEGATIVES), tau, "nce", bank_size=10, partition=z)
    assert got.item() == pytest.approx(numpy_nce(ANCHOR, POSITIVE, NEGATIVES, tau, 10, z), rel=1e-5)


def test_nce_estimates_the_partition_from_the_batch_like_the_reference() -> None:
    got = crd_loss(_t(ANCHOR), _t(POSITIVE), _t(NEGATIVES), 0.07, "nce", bank_size=10)
    assert got.item() == pytest.approx(numpy_nce(ANCHOR, POSITIVE, NEGATIVES, 0.07, 10, None), rel=1e-5)


def test_nce_known_value() -> None:
    # anchor = positive = e1, one negative e2, tau = 1, Z = e, M = 2 (N/M = 1/2):
    # e_pos = 1, h_pos = 2/3; e_neg = 1/e, 1 - h_neg = (1/2) / (1/e + 1/2) = e / (2 + e).
    e1, e2 = torch.tensor([[1.0, 0.0]]), torch.tensor([[[0.0, 1.0]]])
    got = crd_loss(e1, e1, e2, 1.0, "nce", bank_size=2, partition=math.e)
    assert got.item() == pytest.approx(math.log(1.5) + math.log((2 + math.e) / math.e), rel=1e-6)


@pytest.mark.parametrize("tau", [0.07, 0.2])
def test_softmax_variant_matches_the_formula(tau: float) -> None:
    got = crd_loss(_t(ANCHOR), _t(POSITIVE), _t(NEGATIVES), tau, "softmax")
    assert got.item() == pytest.approx(numpy_softmax(ANCHOR, POSITIVE, NEGATIVES, tau), rel=1e-5)


def test_loss_falls_when_the_positive_moves_closer_to_the_anchor() -> None:
    far = crd_loss(_t(ANCHOR), _t(POSITIVE), _t(NEGATIVES), 0.07, "nce", bank_size=10, partition=20.0)
    near = crd_loss(_t(ANCHOR), _t(ANCHOR), _t(NEGATIVES), 0.07, "nce", bank_size=10, partition=20.0)
    assert near.item() < far.item()


def test_bank_update_mixes_with_momentum_then_renormalises() -> None:
    rows = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.6, 0.8, 0.0], [0.0, 0.6, 0.8]]
    bank = torch.tensor(rows)
    embeddings = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]], requires_grad=True)
    update_bank(bank, torch.tensor([1, 3]), embeddings, momentum=0.25)
    expected = np.asarray(rows, dtype=np.float64)
    for row, emb in ((1, [0.0, 0.0, 1.0]), (3, [1.0, 0.0, 0.0])):
        mixed = 0.25 * expected[row] + 0.75 * np.asarray(emb)
        expected[row] = mixed / np.linalg.norm(mixed)
    # e.g. row 1: 0.25 (0, 1, 0) + 0.75 (0, 0, 1) = (0, 0.25, 0.75) -> / sqrt(0.625)
    assert expected[1] == pytest.approx([0.0, 0.25 / math.sqrt(0.625), 0.75 / math.sqrt(0.625)])
    assert bank.numpy() == pytest.approx(expected.astype(np.float32), abs=1e-6)
    assert not bank.requires_grad and bank.grad_fn is None


def test_negatives_never_include_the_positive_and_cover_the_rest_uniformly() -> None:
    generator = torch.Generator().manual_seed(0)
    index = torch.tensor([0, 2, 4, 2])
    draws = sample_negatives(index, 5, 4000, generator)
    assert draws.shape == (4, 4000)
    assert (draws != index.unsqueeze(1)).all()
    assert draws.min() >= 0 and draws.max() <= 4
    for b, positive in enumerate(index.tolist()):
        counts = torch.bincount(draws[b], minlength=5).double() / 4000
        assert counts[positive] == 0
        others = [counts[r].item() for r in range(5) if r != positive]
        assert others == pytest.approx([0.25] * 4, abs=0.03)
    pair = sample_negatives(torch.tensor([0, 1]), 2, 50, generator)
    assert (pair == torch.tensor([[1], [0]])).all()


SIZES = {"source": 20, "target": 30}


def test_banks_are_buffers_of_unit_rows_sized_by_the_splits() -> None:
    _, _, info = real_pair(split_sizes=SIZES)
    component = CRD(CRD.Hparams(feat_dim=16), info)
    buffers = dict(component.named_buffers())
    parameter_names = {name for name, _ in component.named_parameters()}
    for domain, size in (("source", 20), ("target", 30)):
        for network in ("student", "teacher"):
            name = f"bank_{network}_{domain}"
            assert name in buffers and name not in parameter_names
            assert buffers[name].shape == (size, 16) and not buffers[name].requires_grad
            assert buffers[name].norm(dim=1).numpy() == pytest.approx(np.ones(size), abs=1e-5)
    assert parameter_names == {"embed_student.weight", "embed_student.bias", "embed_teacher.weight", "embed_teacher.bias"}
    only_target = CRD(CRD.Hparams(domains="target"), info)
    assert {n for n, _ in only_target.named_buffers()} == {"bank_student_target", "bank_teacher_target", "partition_target"}


@pytest.mark.parametrize("variant", ["nce", "softmax"])
def test_component_value_on_a_two_row_bank_matches_numpy(variant: str) -> None:
    # With a bank of two rows there is exactly one negative per image, the other row, so the whole
    # term can be recomputed from the embeddings and the bank contents before the step.
    student, teacher, info = real_pair(split_sizes={"source": 2, "target": 2})
    hp = CRD.Hparams(weight=0.8, feat_dim=8, temperature=0.1, variant=variant, domains="source")
    component = CRD(hp, info)
    source, target = batches(source_index=[1, 0], target_index=[0, 1], seed=3)
    step = make_step(student, teacher, source, target)
    banks = {net: component.bank(net, "source").clone().double().numpy() for net in ("student", "teacher")}
    s_emb, t_emb = (e.detach().double().numpy() for e in component.embed(step, "source"))
    value = component.loss(step)["crd_source"].item()
    other = [0, 1]  # image 0 has index 1, so its negative is row 0; image 1 has index 0 -> row 1
    student_negatives = banks["student"][other][:, None, :]
    teacher_negatives = banks["teacher"][other][:, None, :]
    if variant == "nce":
        expected = numpy_nce(t_emb, s_emb, student_negatives, 0.1, 2, None) + numpy_nce(s_emb, t_emb, teacher_negatives, 0.1, 2, None)
    else:
        expected = numpy_softmax(t_emb, s_emb, student_negatives, 0.1) + numpy_softmax(s_emb, t_emb, teacher_negatives, 0.1)
    assert value == pytest.approx(0.8 * expected, rel=1e-4)


def test_two_steps_with_indices_update_banks_and_train_both_heads(monkeypatch: pytest.MonkeyPatch) -> None:
    student, teacher, info = real_pair(split_sizes=SIZES)
    component = CRD(CRD.Hparams(feat_dim=16), info)
    component.train()
    drawn: list[tuple[torch.Tensor, int, int, torch.Tensor]] = []

    def spy(index, bank_size, count, generator=None):  # type: ignore[no-untyped-def]
        out = sample_negatives(index, bank_size, count, generator)
        drawn.append((index.clone(), bank_size, count, out))
        return out

    monkeypatch.setattr(crd_module, "sample_negatives", spy)
    optimizer = torch.optim.SGD([*student.parameters(), *component.parameters()], lr=0.05)
    partitions = None
    for step_number, (src, tgt) in enumerate((([0, 3, 5, 7, 11, 19], [29, 0, 4, 8, 15, 16]), ([1, 2, 4, 6, 8, 9], [1, 2, 3, 5, 6, 7]))):
        source, target = batches(source_index=src, target_index=tgt, seed=step_number)
        step = make_step(student, teacher, source, target)
        before = {(n, d): component.bank(n, d).clone() for n in ("student", "teacher") for d in ("source", "target")}
        embeddings = {d: [e.detach() for e in component.embed(step, d)] for d in ("source", "target")}
        terms = component.loss(step)
        assert set(terms) == {"crd_source", "crd_target"}
        optimizer.zero_grad()
        # Both heads are trained (the teacher's g_t too), the teacher itself never.
        assert_only_the_student_learns(terms, student, teacher, extra_modules=(component.embed_student, component.embed_teacher))
        for domain, index in (("source", src), ("target", tgt)):
            for network, emb in zip(("student", "teacher"), embeddings[domain], strict=True):
                old, new = before[network, domain].double().numpy(), component.bank(network, domain).double().numpy()
                expected = old.copy()
                for row, e in zip(index, emb.double().numpy(), strict=True):
                    mixed = 0.5 * old[row] + 0.5 * e
                    expected[row] = mixed / np.linalg.norm(mixed)
                assert new == pytest.approx(expected, abs=1e-5)
                untouched = [r for r in range(len(old)) if r not in index]
                assert (new[untouched] == old[untouched]).all()
            assert not component.bank("student", domain).requires_grad
        current = torch.cat([component.partition_source, component.partition_target])
        assert (current > 0).all()
        if partitions is None:
            partitions = current.clone()
        else:
            assert torch.equal(current, partitions), "Z is estimated once, from the first batch"
        optimizer.step()
    assert [(size, count) for _, size, count, _ in drawn] == [(20, 19), (30, 29)] * 2  # 4096 capped to M - 1
    for index, _, _, negatives in drawn:
        assert (negatives != index.unsqueeze(1)).all()


def test_no_bank_update_in_eval_mode_and_in_batch_negatives_without_indices() -> None:
    student, teacher, info = real_pair(split_sizes=SIZES)
    component = CRD(CRD.Hparams(feat_dim=16), info)
    snapshot = {name: b.clone() for name, b in component.named_buffers() if name.startswith("bank")}
    source, target = batches(source_index=[0, 1, 2, 3], target_index=[4, 5, 6, 7], seed=5)
    component.eval()
    assert all(torch.isfinite(v) for v in component.loss(make_step(student, teacher, source, target)).values())
    component.train()
    unindexed = make_step(student, teacher, Batch(source.x, source.y), Batch(target.x, None))
    terms = component.loss(unindexed)
    assert all(torch.isfinite(v) and v.item() > 0 for v in terms.values())
    for name, value in component.named_buffers():
        if name.startswith("bank"):
            assert torch.equal(value, snapshot[name])


def test_heterogeneous_vit_student_with_resnet_teacher() -> None:
    student, teacher, info = real_pair(VIT_STUDENT, split_sizes={"source": 12, "target": 12})
    component = CRD(CRD.Hparams(), info)
    source, target = batches(source_index=[0, 1, 2, 3, 4, 5], target_index=[6, 7, 8, 9, 10, 11], seed=7)
    terms = component.loss(make_step(student, teacher, source, target))
    assert_only_the_student_learns(terms, student, teacher, extra_modules=(component.embed_student, component.embed_teacher))


def test_crd_conforms_to_the_kit() -> None:
    assert set(check_method(CRD)) == {"crd_source", "crd_target"}


def test_defaults() -> None:
    assert hparam_defaults(CRD, "feat_dim", "negatives", "temperature", "momentum", "variant") == (128, 4096, 0.07, 0.5, "nce")


@pytest.mark.parametrize(
    "bad",
    [{"weight": -1.0}, {"feat_dim": 0}, {"negatives": 0}, {"temperature": 0.0}, {"momentum": 1.0},
     {"momentum": -0.1}, {"variant": "infonce"}, {"domains": "all"}],
)
def test_crd_rejects_invalid_hparams(bad: dict) -> None:
    assert_rejects_hparams(CRD, bad)
