"""Protocol 4: augmentation parity, data identity, grouped validation and transductive targets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from cdkd_bench import Method, MethodInfo, Step
from cdkd_bench.api import DomainData
from cdkd_bench.augment import augmenter
from cdkd_bench.data import Split, data_hash, generator_packages, load_domain, validation_split
from cdkd_bench.engine import EngineSettings, execute, execute_safely
from cdkd_bench.grid import GridRequest, expand
from cdkd_bench.training import fit
from cdkd_plugins.domains.embedded import STRONG


def specs(host, **request):
    return expand(host, GridRequest(**{"tasks": ("printed_to_handwritten",), "seeds": (0,), "budget": "smoke", **request}))


def pick(all_specs, recipe):
    return next(s for s in all_specs if s.recipe == recipe)


def test_every_student_gets_the_teachers_augmentation_unless_parity_is_turned_off(host) -> None:
    on, off = specs(host), specs(host, augmentation_parity=False)
    for recipe in ("source_only", "kd", "target_oracle"):
        assert pick(on, recipe).source_augmentation == STRONG.to_dict() == pick(on, recipe).teacher.augmentation
        assert pick(off, recipe).source_augmentation is None
        assert pick(on, recipe).run_id != pick(off, recipe).run_id
        assert pick(on, recipe).teacher == pick(off, recipe).teacher  # the same teacher serves both


class SeesTheTeacher(Method):
    """Records the source images of each step and the teacher outputs the step gives for them."""

    name = "sees_teacher"
    family = "distillation"
    needs_teacher = True
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    @dataclass(frozen=True)
    class Hparams:
        pass

    def loss(self, step: Step) -> dict[str, torch.Tensor]:
        SeesTheTeacher.seen.append((step.source.x.clone(), step.teacher("source").logits.clone()))
        return {}


def test_under_parity_the_teacher_sees_the_augmented_batch_the_student_sees(host) -> None:
    torch.manual_seed(0)
    teacher = host.architecture("resnet10_w8_32px", 10).eval().requires_grad_(False)
    student = host.architecture("resnet10_w8_32px", 10)
    source = Split(torch.rand(40, 3, 32, 32) * 2 - 1, torch.randint(0, 10, (40,)))
    plain = {tuple(x.flatten()[:8].tolist()) for x in source.x}
    SeesTheTeacher.seen.clear()
    fit(student, [SeesTheTeacher(SeesTheTeacher.Hparams(), MethodInfo(10, 64, 64, 3))], source, None, steps=3, batch_size=8,
        lr=1e-3, weight_decay=0.0, seed=0, teacher=teacher, augment=augmenter(STRONG, 1))
    assert len(SeesTheTeacher.seen) == 3
    for x, logits in SeesTheTeacher.seen:
        assert not {tuple(image.flatten()[:8].tolist()) for image in x} & plain  # augmented, not plain images
        with torch.no_grad():
            assert torch.allclose(logits, teacher(x), atol=1e-5)


def test_a_source_only_student_trains_on_augmented_images_under_parity(host, cache_dir: Path) -> None:
    settings = EngineSettings(cache_dir=cache_dir, device="cpu")
    on = execute(pick(specs(host), "source_only"), host, settings)
    off = execute(pick(specs(host, augmentation_parity=False), "source_only"), host, settings)
    assert on["metrics"]["train_loss.source_ce"] != off["metrics"]["train_loss.source_ce"]
    assert on["metrics"]["teacher.source_val.acc"] == off["metrics"]["teacher.source_val.acc"]


def test_runs_record_the_content_hash_of_their_data_and_the_packages_behind_it(host, cache_dir: Path) -> None:
    spec = pick(specs(host), "kd")
    suite = host.suites.get("embedded")
    for name, digest in ((spec.source, spec.teacher.source_data), (spec.target, spec.target_data)):
        assert digest == data_hash(load_domain(host.domains.get(name), suite.image_size, cache_dir, None))
        assert len(digest) == 16
    result = execute(spec, host, EngineSettings(cache_dir=cache_dir, device="cpu"))
    recorded = result["provenance"]["data"]
    assert recorded[spec.target]["hash"] == spec.target_data
    assert set(recorded[spec.target]["packages"]) == {"matplotlib", "numpy", "pillow", "scikit-learn", "torch"}
    assert "absent" not in recorded[spec.target]["packages"].values()


def test_a_run_planned_with_other_images_is_refused_with_a_sentence(host, cache_dir: Path) -> None:
    spec = dataclasses.replace(pick(specs(host), "source_only"), target_data="0123456789abcdef")
    result = execute_safely(lambda: execute(spec, host, EngineSettings(cache_dir=cache_dir, device="cpu")))
    assert result["status"] == "failed" and result["traceback"] is None
    assert "gives other images on this machine" in result["error"] and "0123456789abcdef" in result["error"]


def test_a_new_version_of_a_generating_package_rebuilds_the_cached_images(host, tmp_path: Path, caplog) -> None:
    domain = host.domains.get("embedded.handwritten")
    load_domain(domain, 32, tmp_path, None)
    calls = []

    def counted(context):
        calls.append(1)
        return domain.load(context)

    # A package that is not installed stands for one whose version changed: the recorded versions differ.
    moved = dataclasses.replace(domain, load=counted, packages=(*domain.packages, "no-such-package-here"))
    assert generator_packages(moved)["no-such-package-here"] == "absent"
    load_domain(moved, 32, tmp_path, None)
    assert calls == [1] and "holds something else" in caplog.text
    load_domain(moved, 32, tmp_path, None)
    assert calls == [1]  # cached again under its new identity


def test_validation_keeps_every_group_whole_and_is_stratified() -> None:
    labels = torch.arange(10).repeat_interleave(60)
    groups = torch.arange(600) // 3  # three variants of each underlying image
    train, val = validation_split(labels, "grouped.domain", groups)
    assert not set(groups[train].tolist()) & set(groups[val].tolist())
    assert sorted(torch.cat([train, val]).tolist()) == list(range(600))
    counts = torch.bincount(labels[val], minlength=10)
    assert counts.min() >= 6 and counts.max() <= 8  # a tenth of each class, in whole groups of three
    again = validation_split(labels, "grouped.domain", groups)
    assert torch.equal(train, again[0]) and torch.equal(val, again[1])


def test_ungrouped_validation_is_the_same_split_as_one_group_per_image() -> None:
    labels = torch.arange(10).repeat_interleave(37)
    plain = validation_split(labels, "some.domain")
    singletons = validation_split(labels, "some.domain", torch.arange(370))
    assert all(torch.equal(a, b) for a, b in zip(plain, singletons, strict=True))


def test_a_transductive_target_is_scored_on_all_its_images_and_the_oracle_on_its_test_split(host, cache_dir: Path) -> None:
    suite = host.suites.get("embedded")
    assert "embedded.handwritten" in suite.transductive_targets
    planned = specs(host)
    handwritten = load_domain(host.domains.get("embedded.handwritten"), 32, cache_dir, None)
    settings = EngineSettings(cache_dir=cache_dir, device="cpu")
    for recipe, evaluation, images in (("kd", "transductive", len(handwritten.train_y) + len(handwritten.test_y)),
                                       ("target_oracle", "test split", len(handwritten.test_y))):
        spec = pick(planned, recipe)
        assert spec.evaluation == evaluation
        assert execute(spec, host, settings)["metrics"]["target_test.images"] == images


@pytest.mark.parametrize("task", ["handwritten_to_printed"])
def test_a_target_with_a_held_out_test_split_is_scored_on_it(host, task: str) -> None:
    assert {s.evaluation for s in specs(host, tasks=(task,))} == {"test split"}


def test_data_hash_changes_with_one_pixel() -> None:
    x = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    y = torch.arange(4)
    first = data_hash(DomainData(x, y, x, y))
    x2 = x.clone()
    x2[0, 0, 0, 0] = 1
    assert data_hash(DomainData(x2, y, x, y)) != first
    assert data_hash(DomainData(x, y, x, y, torch.arange(4))) != first  # groups are part of the data


def test_a_missing_font_stops_the_grid_with_one_sentence_naming_it(tmp_path: Path, monkeypatch, capsys) -> None:
    from cdkd_bench.cli import main
    from cdkd_plugins.domains import embedded_fonts

    monkeypatch.setattr(embedded_fonts, "font_folder", lambda: tmp_path / "fonts-gone")
    monkeypatch.chdir(tmp_path)
    code = main(["run", "--budget", "smoke", "--tasks", "printed_to_handwritten", "--seeds", "0", "--cache-dir",
                 str(tmp_path / "fresh-cache"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("cdkd-bench: error: ")
    assert ".ttf" in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "fresh-cache" / "teachers").exists()  # refused while planning, before any training
