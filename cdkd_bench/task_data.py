"""A run's four splits, on its device: source train / val (fixed), target train (unlabelled) / test."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cdkd_bench.data import Split, load_domain, to_input, validation_split
from cdkd_bench.plugins import Host
from cdkd_bench.settings import EngineSettings
from cdkd_bench.spec import RunSpec


@dataclass
class TaskData:
    source_train: Split
    source_val: Split
    target_train: Split
    target_test: Split


def _split(x: torch.Tensor, y: torch.Tensor, device: torch.device) -> Split:
    return Split(to_input(x.to(device)), y.to(device))


def load_source(host: Host, suite_name: str, source: str, settings: EngineSettings, device: torch.device) -> tuple[Split, Split]:
    """The source domain's (train, val) splits; val is a fixed stratified tenth of its train split."""
    suite = host.suite(suite_name)
    data = load_domain(host.domains.get(source), suite.image_size, settings.cache_dir, settings.data_root)
    train_idx, val_idx = validation_split(data.train_y, source)
    return (
        _split(data.train_x[train_idx], data.train_y[train_idx], device),
        _split(data.train_x[val_idx], data.train_y[val_idx], device),
    )


def load_task_data(host: Host, spec: RunSpec, settings: EngineSettings, device: torch.device) -> TaskData:
    suite = host.suite(spec.suite)
    source_train, source_val = load_source(host, spec.suite, spec.source, settings, device)
    target = load_domain(host.domains.get(spec.target), suite.image_size, settings.cache_dir, settings.data_root)
    return TaskData(
        source_train=source_train,
        source_val=source_val,
        target_train=_split(target.train_x, target.train_y, device),
        target_test=_split(target.test_x, target.test_y, device),
    )
