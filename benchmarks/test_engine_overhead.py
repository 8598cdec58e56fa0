"""The engine's training loop against a bare PyTorch loop doing the same work (tox -e bench).

Both train the default student for the same steps on the same batches; pytest-benchmark's
table gives their times side by side (read the ratio, not the absolute numbers). Each test
also checks the two loops end with identical weights, so the comparison is like for like.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from cdkd_bench.data import BatchStream, Split, load_domain, to_input
from cdkd_bench.plugins import load_host
from cdkd_bench.training import fit

STEPS = 100
BATCH = 64


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    torch.set_num_threads(min(2, torch.get_num_threads()))
    host = load_host()
    suite = host.suites.get("embedded")
    data = load_domain(host.domains.get("embedded.printed"), suite.image_size, Path(tmp_path_factory.mktemp("cache")), None)
    return host, suite, Split(to_input(data.train_x), data.train_y)


def new_student(host, suite):
    torch.manual_seed(0)
    return host.architecture(suite.default_student, suite.num_classes)


def bare_loop(model: torch.nn.Module, split: Split) -> None:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, STEPS) / STEPS)))
    batches = BatchStream(split, BATCH, seed=0)
    model.train()
    for _ in range(STEPS):
        x, y, _ = batches.next()
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()


def engine_loop(model: torch.nn.Module, split: Split) -> None:
    fit(model, [], split, None, steps=STEPS, batch_size=BATCH, lr=1e-2, weight_decay=5e-4, seed=0)


@pytest.mark.benchmark(group=f"student training, {STEPS} steps")
@pytest.mark.parametrize("loop", [bare_loop, engine_loop], ids=["bare-pytorch", "cdkd-engine"])
def test_training_loop(benchmark, setup, loop) -> None:
    host, suite, split = setup
    models = []

    def run():
        model = new_student(host, suite)
        loop(model, split)
        models.append(model)

    benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    reference = new_student(host, suite)
    (engine_loop if loop is bare_loop else bare_loop)(reference, split)
    for name, value in models[-1].state_dict().items():
        torch.testing.assert_close(value, reference.state_dict()[name], msg=f"{name} differs between the loops")
