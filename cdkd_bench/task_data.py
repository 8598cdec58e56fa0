"""A run's four splits, on its device: source train / val (fixed), target train (unlabelled) / test."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cdkd_bench.api import DomainData
from cdkd_bench.data import Split, domain_fingerprint, load_domain, validation_split
from cdkd_bench.errors import UserError
from cdkd_bench.images import Images
from cdkd_bench.label_regimes import labelled_target_indices, parse_regime
from cdkd_bench.plugins import Host
from cdkd_bench.settings import EngineSettings
from cdkd_bench.spec import RunSpec, TeacherSpec

TRANSDUCTIVE = "transductive"


@dataclass
class TaskData:
    source_train: Split
    source_val: Split
    target_train: Split
    target_test: Split
    target_splits: tuple[str, str] = ("train", "test")
    """Names of the target train and test splits' images (``all`` under the transductive protocol)."""
    labelled_target: Split | None = None
    """The target train images whose labels the run's label regime reveals (None under ``uda``)."""
    target_val: Split | None = None
    """Labelled target images that only score checkpoints (``ssda-K``); never trained on."""


def _split(parts: list[torch.Tensor], y: torch.Tensor, device: torch.device, size: int, rows: torch.Tensor | None = None) -> Split:
    """A split whose images stay uint8 where they are stored (on the device when they fit) and are converted per batch."""
    return Split(Images(parts, device, size, rows), y.to(device))


def _checked(host: Host, suite_name: str, domain: str, expected: str, settings: EngineSettings) -> DomainData:
    """The domain's data, refused when it is not the data the run was planned with (other fonts, another renderer)."""
    declared, size = host.domains.get(domain), host.suite(suite_name).image_size
    data = load_domain(declared, size, settings.cache_dir, settings.data_root)
    # Remembered per cache file: a worker running many runs of one domain hashes its images once.
    found = domain_fingerprint(declared, size, settings.cache_dir, settings.data_root, data) if expected else ""
    if found != expected:
        raise UserError(f"domain {domain!r} gives other images on this machine (content hash {found}) than the run "
                        f"was planned with ({expected}); its results would not be comparable, so it is not run here")
    return data


def load_source(host: Host, suite_name: str, source: str, settings: EngineSettings, device: torch.device,
                expected_hash: str = "") -> tuple[Split, Split]:
    """The source domain's (train, val) splits; val is a fixed stratified tenth of its train split, whole groups."""
    data = _checked(host, suite_name, source, expected_hash, settings)
    train_idx, val_idx = validation_split(data.train_y, source, data.train_groups)
    if len(train_idx) == 0:
        raise UserError(f"domain {source!r} has too few train images to be a source: each class keeps at least one image "
                        f"for source validation, and its {len(val_idx)} images all went there")
    size = host.suite(suite_name).input_size
    return (
        _split([data.train_x], data.train_y[train_idx], device, size, train_idx),
        _split([data.train_x], data.train_y[val_idx], device, size, val_idx),
    )


def load_task_data(host: Host, spec: RunSpec, settings: EngineSettings, device: torch.device) -> TaskData:
    source_train, source_val = load_source(host, spec.suite, spec.source, settings, device, spec.teacher.source_data)
    target = _checked(host, spec.suite, spec.target, spec.target_data, settings)
    size = host.suite(spec.suite).input_size
    if spec.evaluation == TRANSDUCTIVE:  # only under uda: a labelled regime is scored on the test split
        everything = _all_images(target, device, size)
        return TaskData(source_train, source_val, everything, everything, ("all", "all"))
    data = TaskData(source_train, source_val, _split([target.train_x], target.train_y, device, size),
                    _split([target.test_x], target.test_y, device, size))
    regime = parse_regime(spec.label_regime)
    if regime.reveals_target_labels:
        labelled, validation = labelled_target_indices(regime, target.train_y, spec.target, spec.seed)
        data.labelled_target = _split([target.train_x], target.train_y[labelled], device, size, labelled)
        if len(validation):
            data.target_val = _split([target.train_x], target.train_y[validation], device, size, validation)
    return data


def load_unlabelled_target(host: Host, teacher: TeacherSpec, settings: EngineSettings, device: torch.device) -> Split:
    """The target images an adapted teacher trains on: the ones its students see unlabelled (labels kept, never revealed)."""
    target = _checked(host, teacher.suite, teacher.target, teacher.target_data, settings)
    size = host.suite(teacher.suite).input_size
    if teacher.target_evaluation == TRANSDUCTIVE:
        return _all_images(target, device, size)
    return _split([target.train_x], target.train_y, device, size)


def _all_images(data: DomainData, device: torch.device, size: int) -> Split:
    """Every image of a domain as one split: under the transductive protocol (the Office protocol)
    every target image is unlabelled training data and test data."""
    return _split([data.train_x, data.test_x], torch.cat([data.train_y, data.test_y]), device, size)
