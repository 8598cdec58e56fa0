"""Every kind of cache damage is detected, said once, and rebuilt; nothing damaged is ever used."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from pathlib import Path

import pytest
import torch

from cdkd_bench.cache import cache_lock, load_verified, save_verified, sweep_temporary_files
from cdkd_bench.data import domain_cache_path, generator_packages, load_domain
from cdkd_bench.errors import UserError
from cdkd_bench.grid import GridRequest, expand
from cdkd_bench.settings import EngineSettings
from cdkd_bench.task_data import load_source
from cdkd_bench.teachers import obtain_teacher, teacher_path

DEVICE = torch.device("cpu")


@pytest.fixture(scope="module")
def teachers(host):
    specs = expand(host, GridRequest(tasks=("printed_to_handwritten",), recipes=("kd",), seeds=(0, 1), budget="smoke"))
    return specs[0].teacher, next(s.teacher for s in specs if s.seed == 1)


@pytest.fixture(scope="module")
def trained_cache(host, teachers, tmp_path_factory: pytest.TempPathFactory, session_data: Path) -> Path:
    """A cache holding both teachers, trained once for the module; tests damage copies of it."""
    cache = tmp_path_factory.mktemp("trained") / "cache"
    cache.mkdir()
    (cache / "data").symlink_to(session_data, target_is_directory=True)
    for teacher in teachers:
        train(host, teacher, cache)
    return cache


def copy_cache(trained: Path, tmp_path: Path) -> Path:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "data").symlink_to((trained / "data").resolve(), target_is_directory=True)
    shutil.copytree(trained / "teachers", cache / "teachers")
    return cache


def train(host, teacher, cache: Path):
    settings = EngineSettings(cache_dir=cache, device="cpu")
    source_train, source_val = load_source(host, teacher.suite, teacher.source, settings, DEVICE)
    return obtain_teacher(host, teacher, source_train, source_val, settings, DEVICE)


def _edit_payload(path: Path, change) -> None:
    """Change what a cache file holds without updating its recorded hash, as a careless edit would."""
    payload = torch.load(path, weights_only=True)
    change(payload)
    torch.save(payload, path)


def _first_float(tensors: dict[str, torch.Tensor]) -> str:
    return next(name for name, t in tensors.items() if t.is_floating_point())


def _copy_other_teacher(path: Path, other: Path) -> None:
    path.write_bytes(other.read_bytes())


def _nan_weights(path: Path, teacher) -> None:
    payload = torch.load(path, weights_only=True)
    tensors = payload["tensors"]
    tensors[_first_float(tensors)][...] = float("nan")
    save_verified(path, {"kind": "teacher", **teacher.to_dict()}, tensors, payload["extra"])  # hash matches: still refused


def _wrong_shapes(path: Path, teacher) -> None:
    payload = torch.load(path, weights_only=True)
    tensors = {name: t[..., :1] if t.dim() else t for name, t in payload["tensors"].items()}
    save_verified(path, {"kind": "teacher", **teacher.to_dict()}, tensors, payload["extra"])


def _nudge_a_weight(payload) -> None:
    tensors = payload["tensors"]
    tensors[_first_float(tensors)].view(-1)[0] += 1.0


TEACHER_DAMAGE = {
    "another-teachers-file": ("holds something else (seed=1 where 0 was expected)", lambda p, t, other: _copy_other_teacher(p, other)),
    "nan-weights": ("holds non-finite values", lambda p, t, other: _nan_weights(p, t)),
    "wrong-shapes": ("does not fit architecture 'resnet18_w16_32px'", lambda p, t, other: _wrong_shapes(p, t)),
    "edited-weight": ("does not match its recorded content hash", lambda p, t, other: _edit_payload(p, _nudge_a_weight)),
    "truncated": ("is unreadable", lambda p, t, other: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])),
    "garbage": ("is unreadable", lambda p, t, other: p.write_bytes(os.urandom(4096))),
    "empty": ("is unreadable", lambda p, t, other: p.write_bytes(b"")),
    "previous-format": ("is not a cdkd-bench cache file of this version",
                        lambda p, t, other: torch.save({"state_dict": {}, "metrics": {"source_val.acc": 99.0}}, p)),
}


@pytest.mark.parametrize("damage", list(TEACHER_DAMAGE))
def test_a_damaged_teacher_file_is_detected_said_once_and_retrained(
    host, teachers, trained_cache: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    teacher, other = teachers
    cache = copy_cache(trained_cache, tmp_path)
    _, metrics, trained = train(host, teacher, cache)
    assert trained is False  # the intact copy is trusted
    expected = {k: v.clone() for k, v in torch.load(teacher_path(EngineSettings(cache), teacher), weights_only=True)["tensors"].items()}
    message, apply = TEACHER_DAMAGE[damage]
    path = teacher_path(EngineSettings(cache), teacher)
    apply(path, teacher, teacher_path(EngineSettings(cache), other))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cdkd_bench"):
        model, again, trained = train(host, teacher, cache)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and message in warnings[0] and "rebuilding it" in warnings[0], warnings
    assert trained is True and again["source_val.acc"] == metrics["source_val.acc"]
    assert all(torch.equal(model.state_dict()[k].cpu(), v) for k, v in expected.items())  # the same teacher, deterministically
    # and the rebuilt file is trusted again: loaded, not retrained
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cdkd_bench"):
        assert train(host, teacher, cache)[2] is False
    assert not caplog.records


def test_a_teacher_file_that_cannot_be_replaced_names_the_file_to_delete(host, teachers, tmp_path: Path) -> None:
    teacher, _ = teachers
    path = teacher_path(EngineSettings(tmp_path / "cache"), teacher)
    (path / "inner").mkdir(parents=True)
    with pytest.raises(UserError, match=f"cache file '{path}' is a folder; delete it and run again"):
        train(host, teacher, tmp_path / "cache")


def _shrink(payload) -> None:
    tensors = payload["tensors"]
    tensors["train_x"], tensors["train_y"] = tensors["train_x"][:50], tensors["train_y"][:50]


def _shuffle_labels(payload) -> None:
    labels = payload["tensors"]["train_y"]
    payload["tensors"]["train_y"] = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]


def _labels_out_of_range(path: Path, domain, size: int) -> None:
    payload = torch.load(path, weights_only=True)
    payload["tensors"]["test_y"] = payload["tensors"]["test_y"] + 10
    identity = {"kind": "domain", "domain": domain.name, "version": domain.version, "image_size": size,
                "packages": generator_packages(domain)}
    save_verified(path, identity, payload["tensors"], payload["extra"])


DATA_DAMAGE = {
    "fewer-images": ("does not match its recorded content hash", lambda p, d, s, other: _edit_payload(p, _shrink)),
    "shuffled-labels": ("does not match its recorded content hash", lambda p, d, s, other: _edit_payload(p, _shuffle_labels)),
    "another-domains-file": ("holds something else (domain='embedded.printed' where 'embedded.handwritten' was expected)",
                             lambda p, d, s, other: p.write_bytes(other.read_bytes())),
    "labels-out-of-range": ("is malformed", lambda p, d, s, other: _labels_out_of_range(p, d, s)),
    "truncated": ("is unreadable", lambda p, d, s, other: p.write_bytes(p.read_bytes()[:1000])),
}


@pytest.mark.parametrize("damage", list(DATA_DAMAGE))
def test_a_damaged_data_cache_is_detected_said_once_and_rebuilt(
    host, session_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    domain, other = host.domains.get("embedded.handwritten"), host.domains.get("embedded.printed")
    shutil.copytree(session_data, tmp_path / "data")
    fresh = load_domain(domain, 32, tmp_path, None)
    message, apply = DATA_DAMAGE[damage]
    apply(domain_cache_path(domain, 32, tmp_path), domain, 32, domain_cache_path(other, 32, tmp_path))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cdkd_bench"):
        rebuilt = load_domain(domain, 32, tmp_path, None)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and message in warnings[0], warnings
    for field in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(rebuilt, field), getattr(fresh, field))


def test_a_domain_version_change_is_a_different_cache_entry(host, tmp_path: Path) -> None:
    domain = host.domains.get("embedded.handwritten")
    load_domain(domain, 32, tmp_path, None)
    bumped = dataclasses.replace(domain, version=domain.version + 1)
    assert domain_cache_path(bumped, 32, tmp_path) != domain_cache_path(domain, 32, tmp_path)


def test_leftover_temporary_files_are_swept_unless_their_writer_is_alive(tmp_path: Path) -> None:
    target = tmp_path / "teachers" / "abc.pt"
    target.parent.mkdir()
    dead = target.parent / ".abc.pt.k3j2h1.tmp"   # its writer was killed between write and rename
    dead.write_bytes(b"half a file")
    live_target = target.parent / "def.pt"
    live = target.parent / ".def.pt.z9y8x7.tmp"
    live.write_bytes(b"being written")
    with cache_lock(live_target):   # a live builder holds def.pt's lock
        live.write_bytes(b"being written")
        assert sweep_temporary_files(target.parent) == 1
        assert not dead.exists() and live.exists()
    assert sweep_temporary_files(target.parent) == 1 and not live.exists()


def test_taking_the_lock_removes_the_leftovers_of_that_file(tmp_path: Path) -> None:
    target = tmp_path / "x.pt"
    leftover = tmp_path / ".x.pt.abcdef.tmp"
    leftover.write_bytes(b"half")
    with cache_lock(target):
        assert not leftover.exists()


def test_a_verified_file_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "f.pt"
    tensors = {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.tensor(3)}
    save_verified(path, {"kind": "test", "tuple": (1, 2)}, tensors, {"note": "x"})
    loaded, extra = load_verified(path, {"kind": "test", "tuple": (1, 2)})
    assert extra == {"note": "x"} and all(torch.equal(loaded[k], v) for k, v in tensors.items())
