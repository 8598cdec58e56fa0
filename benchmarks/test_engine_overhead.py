"""The engine's training loop against a bare PyTorch loop doing the same work, at 1 CPU thread (tox -e bench).

Two cases on printed → handwritten with the suite's default networks and the `kd` spec of the
quick budget: cross-entropy alone (the student by itself), and `kd` (a frozen teacher whose
plain outputs are computed once per split, then looked up per batch). The bare loop does by
hand what the engine does: channels-last student, inputs from ``to_input``, fused AdamW with
the same parameter groups, the same cosine schedule and the same batch streams, so both end
with bit-identical weights, which each test asserts. The rounds alternate (bare, engine,
bare, …); pytest-benchmark's row is the engine side, and the ratio engine/bare of the
medians is printed and stored in the row's extra_info. Read the ratio, not the seconds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cdkd_bench.api import Method, MethodInfo
from cdkd_bench.data import BatchStream, Split
from cdkd_bench.engine import build_components
from cdkd_bench.networks import network_info
from cdkd_bench.plan import expand
from cdkd_bench.plugins import Host, load_host
from cdkd_bench.request import GridRequest
from cdkd_bench.settings import EngineSettings
from cdkd_bench.spec import RunSpec, derive_seed
from cdkd_bench.task_data import TaskData, load_task_data
from cdkd_bench.training import fit

STEPS = 100
ROUNDS = 5
TEACHER_TABLE_BATCH = 512  # predict_outputs' batch: convolutions may round differently for another batch size
CPU = torch.device("cpu")


@dataclass
class Setup:
    host: Host
    spec: RunSpec  # the kd run of the quick budget: its networks, batch size, lr, weight decay, hparams
    data: TaskData
    teacher: nn.Module

    @property
    def batch_seed(self) -> int:
        return derive_seed(self.spec.seed, "student-batches")  # as the engine seeds a run's batches


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the engine's default: one thread per run
    host = load_host()
    request = GridRequest(tasks=("printed_to_handwritten",), recipes=("kd",), seeds=(0,), budget="quick", threads=1, device="cpu")
    spec = next(s for s in expand(host, request) if s.recipe == "kd")
    data = load_task_data(host, spec, EngineSettings(cache_dir=Path(tmp_path_factory.mktemp("cache"))), CPU)
    # An untrained teacher costs what a trained one does; frozen and in eval mode, as obtain_teacher leaves it.
    torch.manual_seed(derive_seed(spec.teacher.seed, "teacher-init"))
    teacher = host.architecture(spec.teacher.arch, spec.teacher.num_classes, spec.teacher.pretrained)
    teacher = teacher.to(memory_format=torch.channels_last).eval().requires_grad_(False)
    yield Setup(host, spec, data, teacher)
    torch.set_num_threads(threads)


def new_student(setup: Setup) -> nn.Module:
    """The run's initial student, as the engine builds it (same seed every round, so every round ends alike)."""
    torch.manual_seed(derive_seed(setup.spec.seed, "student-init"))
    student = setup.host.architecture(setup.spec.student_arch, setup.spec.teacher.num_classes, False)
    return student.to(memory_format=torch.channels_last)


def kd_component(setup: Setup, student: nn.Module) -> Method:
    """The `kd` component with the spec's hparams, built by the engine's own build_components."""
    spec, data = setup.spec, setup.data
    student_info = network_info(student, spec.student_arch, spec.teacher.image_size, CPU)
    teacher_info = network_info(setup.teacher, spec.teacher.arch, spec.teacher.image_size, CPU)
    info = MethodInfo(
        num_classes=spec.teacher.num_classes, student_features=student_info.num_features,
        teacher_features=teacher_info.num_features, total_steps=STEPS, student=student_info, teacher=teacher_info,
        split_sizes={"source": len(data.source_train), "target": len(data.target_train)}, image_size=spec.teacher.image_size,
    )
    (component,) = build_components(setup.host, spec, info, CPU)
    return component


# --------------------------------------------------------------------------- the bare loops


def bare_optimizer(model: nn.Module, setup: Setup) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """Fused AdamW, the classifier at lr and the body at lr * backbone_lr_mult, and a cosine decay to zero."""
    spec = setup.spec
    head_ids = {id(p) for p in model.get_classifier().parameters()}
    body = [p for p in model.parameters() if id(p) not in head_ids]
    head = [p for p in model.parameters() if id(p) in head_ids]
    optimizer = torch.optim.AdamW([
        {"params": body, "lr": spec.lr * spec.backbone_lr_mult, "weight_decay": spec.weight_decay},
        {"params": head, "lr": spec.lr, "weight_decay": spec.weight_decay},
    ], fused=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1.0 + math.cos(math.pi * min(s, STEPS) / STEPS)))
    return optimizer, scheduler


def bare_cross_entropy(model: nn.Module, setup: Setup) -> nn.Module:
    optimizer, scheduler = bare_optimizer(model, setup)
    batches = BatchStream(setup.data.source_train, setup.spec.batch_size, setup.batch_seed)
    model.train()
    for _ in range(STEPS):
        x, y, _ = batches.next()
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    return model


@torch.no_grad()
def teacher_logits(teacher: nn.Module, split: Split) -> torch.Tensor:
    """The frozen teacher's logits for every image of a split, computed once: plain images never change."""
    return torch.cat([teacher(split.x[i : i + TEACHER_TABLE_BATCH]) for i in range(0, len(split), TEACHER_TABLE_BATCH)])


def bare_kd(model: nn.Module, setup: Setup) -> nn.Module:
    hp = setup.spec.hparams["kd"]
    assert hp["variant"] == "kl" and hp["domains"] == "both", "the bare loop writes out the KL variant on both domains"
    temperature, weight = hp["temperature"], hp["weight"]

    def kd(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        # Hinton KD: T^2 * KL(teacher_T || student_T). log_target=True, as the kd plugin calls it: the
        # softmax-probability target would round differently, and the weights would no longer match bit for bit.
        kl = F.kl_div(F.log_softmax(student / temperature, dim=1), F.log_softmax(teacher / temperature, dim=1),
                      log_target=True, reduction="batchmean")
        return weight * (kl * temperature**2)

    source, target = setup.data.source_train, setup.data.target_train
    teacher_source, teacher_target = teacher_logits(setup.teacher, source), teacher_logits(setup.teacher, target)
    optimizer, scheduler = bare_optimizer(model, setup)
    source_batches = BatchStream(source, setup.spec.batch_size, setup.batch_seed)
    target_batches = BatchStream(target, setup.spec.batch_size, setup.batch_seed + 1)
    model.train()
    for _ in range(STEPS):
        xs, ys, source_index = source_batches.next()
        xt, _, target_index = target_batches.next()
        # Two forward passes, source first: BatchNorm normalises (and tracks) each domain's batch on its own.
        logits_s = model(xs)
        loss_s = F.cross_entropy(logits_s, ys) + kd(logits_s, teacher_source[source_index])
        loss = loss_s + kd(model(xt), teacher_target[target_index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    return model


# --------------------------------------------------------------------------- the engine's loop


def engine_fit(model: nn.Module, setup: Setup, components: list[Method]) -> nn.Module:
    spec = setup.spec
    uses_target = any(c.uses_target for c in components)
    needs_teacher = any(c.needs_teacher for c in components)
    fit(model, components, setup.data.source_train, setup.data.target_train if uses_target else None,
        steps=STEPS, batch_size=spec.batch_size, lr=spec.lr, weight_decay=spec.weight_decay, seed=setup.batch_seed,
        teacher=setup.teacher if needs_teacher else None, backbone_lr_mult=spec.backbone_lr_mult)
    return model


def engine_cross_entropy(model: nn.Module, setup: Setup) -> nn.Module:
    return engine_fit(model, setup, [])


def engine_kd(model: nn.Module, setup: Setup) -> nn.Module:
    # Building the component is part of the engine's work per run (it costs next to nothing for kd).
    return engine_fit(model, setup, [kd_component(setup, model)])


CASES: dict[str, tuple[Callable[[nn.Module, Setup], nn.Module], Callable[[nn.Module, Setup], nn.Module]]] = {
    "cross_entropy": (bare_cross_entropy, engine_cross_entropy),
    "kd": (bare_kd, engine_kd),
}


@pytest.mark.benchmark(group=f"engine loop (bare-loop ratio in extra_info), {STEPS} steps, 1 thread")
@pytest.mark.parametrize("case", list(CASES))
def test_engine_vs_bare_loop(benchmark, alternate, setup: Setup, case: str) -> None:
    bare, engine = CASES[case]
    comparison = alternate(lambda: new_student(setup), lambda m: bare(m, setup), lambda m: engine(m, setup),
                           names=("bare", "engine"), rounds=ROUNDS)
    comparison.report(benchmark, f"{case}, {STEPS} steps, 1 thread")
    benchmark.extra_info["steps"] = STEPS

    bare_state, engine_state = comparison.baseline_result.state_dict(), comparison.measured_result.state_dict()
    assert bare_state.keys() == engine_state.keys()
    for name, value in engine_state.items():
        torch.testing.assert_close(value, bare_state[name], rtol=0, atol=0, msg=lambda m, n=name: f"{n} differs between the loops: {m}")
