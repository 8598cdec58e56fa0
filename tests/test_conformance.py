"""The plugin-author checks of cdkd_bench.conformance: the built-in plugins pass, broken ones are refused in one sentence."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cdkd_bench import run_job
from cdkd_bench.api import (
    DataContext,
    Domain,
    DomainData,
    DomainFiles,
    Executor,
    ImageFiles,
    Job,
    PublishedResult,
    Ready,
    Selector,
)
from cdkd_bench.conformance import KitSuitePlugin
from cdkd_bench.plugins import Host, load_host
from cdkd_bench.testing import TinyNet, check_architecture, check_domain, check_executor, check_selector, check_suite
from cdkd_bench.workers import run_in_this_process


def refused(check: Callable[[], Any], *fragments: str) -> str:
    """The check fails with one sentence (no line break) holding every fragment."""
    with pytest.raises(AssertionError) as info:
        check()
    message = str(info.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


# --------------------------------------------------------------------------- domains


def _generated(name: str = "mine.photos", classes: int = 2, **changes: Any) -> Domain:
    """A deterministic generated domain; ``changes`` override fields of what ``load`` returns."""

    def load(_context: DataContext) -> DomainData:
        g = torch.Generator().manual_seed(0)
        data = DomainData(torch.randint(0, 256, (8, 3, 12, 12), dtype=torch.uint8, generator=g), torch.arange(8) % classes,
                          torch.randint(0, 256, (4, 1, 12, 12), dtype=torch.uint8, generator=g), torch.arange(4) % classes)
        return dataclasses.replace(data, **{k: v() if callable(v) else v for k, v in changes.items()})

    return Domain(name, classes, load)


def test_every_installed_domain_declares_itself_correctly(host: Host) -> None:
    for entry in host.domains:
        assert check_domain(entry.value, load=False) is None


def test_a_generated_builtin_domain_loads_deterministically(host: Host) -> None:
    data = check_domain(host.domains.get("embedded.handwritten"))  # one of the quick ones (about a second a load)
    assert isinstance(data, DomainData) and len(data.test_y) > 0


def test_the_kit_domains_and_a_small_generated_domain_conform() -> None:
    for domain in (*KitSuitePlugin().domains, _generated()):
        assert isinstance(check_domain(domain), DomainData)


def test_broken_generated_domains_are_refused_naming_the_field() -> None:
    refused(lambda: check_domain(_generated(train_y=torch.arange(8) % 3)), "train labels must lie in [0, 2)", "found 0..2")
    refused(lambda: check_domain(_generated(name="Photos")), "domain name 'Photos'", "'<suite>.<name>'")
    refused(lambda: check_domain(_generated(test_x=torch.zeros(4, 3, 12, 12))), "test images must be uint8", "torch.float32")
    refused(lambda: check_domain(_generated(test_x=torch.zeros(0, 3, 12, 12, dtype=torch.uint8), test_y=torch.zeros(0, dtype=torch.int64))),
            "test split has 0 images")
    calls = itertools.count()  # each load draws other labels, like a generator seeded from the clock
    refused(lambda: check_domain(_generated(train_y=lambda: (torch.arange(8) + next(calls)) % 2)), "is not deterministic", "train_y")
    refused(lambda: check_domain(dataclasses.replace(_generated(), num_classes=1)), "num_classes must be an integer >= 2", "got 1")
    refused(lambda: check_domain(dataclasses.replace(_generated(), version=0)), "version must be an integer >= 1")


def _image_files(root: Path, count: int) -> tuple[Path, ...]:
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = root / f"img{i}.png"
        Image.fromarray(np.full((6, 6, 3), 40 * i, dtype=np.uint8)).save(path)
        paths.append(path)
    return tuple(paths)


def _located(root: Path, train_labels: tuple[int, ...] = (0, 1, 0), test_labels: tuple[int, ...] = (1, 0),
             edit: Callable[[DomainFiles], DomainFiles] = lambda files: files) -> Domain:
    paths = _image_files(root, len(train_labels) + len(test_labels))

    def locate(context: DataContext) -> DomainFiles:
        assert context.data_root == root
        train, test = paths[: len(train_labels)], paths[len(train_labels):]
        return edit(DomainFiles(paths, ImageFiles(train, train_labels), ImageFiles(test, test_labels)))

    return Domain("mine.scans", 2, None, locate=locate)


def test_a_file_domain_is_read_only_with_a_data_root_and_then_conforms(tmp_path: Path) -> None:
    domain = _located(tmp_path)
    assert check_domain(domain) is None  # nothing to read without a data root
    files = check_domain(domain, tmp_path)
    assert isinstance(files, DomainFiles) and files.train is not None and len(files.train.paths) == 3


def test_a_file_domain_decoded_by_its_own_load_is_checked_through_load(tmp_path: Path) -> None:
    source = tmp_path / "digits.bin"
    source.write_bytes(b"\0" * 16)
    generated = _generated()
    arrays = Domain("mine.arrays", 2, generated.load, locate=lambda _c: DomainFiles((source,)))
    assert isinstance(check_domain(arrays, tmp_path), DomainData)
    without_load = Domain("mine.arrays", 2, None, locate=lambda _c: DomainFiles((source,)))
    refused(lambda: check_domain(without_load, tmp_path), "lists no image files", "needs a `load`")


def test_broken_file_domains_are_refused_naming_the_field(tmp_path: Path) -> None:
    refused(lambda: check_domain(_located(tmp_path / "a", train_labels=(0, 5, 1)), tmp_path / "a"),
            "train label 5", "must be an integer in [0, 2)")
    refused(lambda: check_domain(_located(tmp_path / "b", edit=lambda f: dataclasses.replace(f, test=None)), tmp_path / "b"),
            "both splits' image files (train and test) or neither")
    refused(lambda: check_domain(_located(tmp_path / "c", edit=lambda f: dataclasses.replace(f, sources=(*f.sources, tmp_path / "gone.png"))),
                                 tmp_path / "c"), "source", "gone.png", "is not an existing file")
    refused(lambda: check_domain(_located(tmp_path / "d", edit=lambda f: dataclasses.replace(f, sources=f.sources[1:])), tmp_path / "d"),
            "train image", "is not among DomainFiles.sources")


# --------------------------------------------------------------------------- suites


def test_every_installed_suite_conforms_in_the_host(host: Host) -> None:
    assert len(host.suites) >= 2
    for entry in host.suites:
        check_suite(entry.value, host)


def test_broken_suites_are_refused_naming_the_field(host: Host) -> None:
    suite = KitSuitePlugin().suite
    check_suite(suite)
    bad = lambda **changes: (lambda: check_suite(dataclasses.replace(suite, **changes)))  # noqa: E731
    refused(bad(default_budget="quick"), "default_budget 'quick' is not among its budgets ('smoke')")
    refused(bad(converged_budget="long"), "converged_budget 'long' is not among its budgets")
    refused(bad(budgets={}), "budgets must be a non-empty mapping")
    refused(bad(transductive_targets=("kit.other",)), "transductive_targets names 'kit.other'")
    refused(bad(default_tasks=("light_to_nowhere",)), "default_tasks names 'light_to_nowhere'", "light_to_dark, dark_to_light")
    refused(bad(pairs=(("kit.light", "kit.other"),)), "has target 'kit.other', which is not among its domains")
    refused(bad(crop_size=64), "crop_size must be None or an integer in [8, image_size=32], got 64")
    refused(bad(image_size=4, crop_size=None), "image_size must be an integer >= 8, got 4")
    refused(bad(default_seeds=()), "default_seeds must be a non-empty tuple")
    refused(bad(views={"strong": "flip"}), "views['strong'] must be an Augmentation")
    refused(bad(published=(PublishedResult("light_to_blue", "dann", 71.0, "a paper"),)), "names task 'light_to_blue'")
    refused(bad(name="Kit"), "suite name 'Kit'")
    refused(lambda: check_suite(suite, host), "domain 'kit.light' is not registered in the host")
    refused(lambda: check_suite(dataclasses.replace(host.suites.get("embedded"), default_recipes=("kd+nope",)), host),
            "default recipe 'kd+nope' uses method 'nope', which is not registered")


# --------------------------------------------------------------------------- architectures


@pytest.mark.parametrize("name", ["resnet10_w8_32px", "resnet10t"])
def test_installed_architectures_conform(host: Host, name: str) -> None:
    model = check_architecture(name, num_classes=5, host=host)
    assert model.get_classifier().out_features == 5


def test_a_factory_is_called_with_the_number_of_classes() -> None:
    check_architecture(lambda classes: TinyNet(classes, (4, 6), (2, 2)), num_classes=3, image_size=16)


class _NoHead(TinyNet):
    forward_head = None  # type: ignore[assignment]


class _Unused(TinyNet):
    def __init__(self, num_classes: int) -> None:
        super().__init__(num_classes, (4, 6), (2, 2))
        self.unused = nn.Linear(3, 3)


class _LyingFeatureInfo(TinyNet):
    def __init__(self, num_classes: int) -> None:
        super().__init__(num_classes, (4, 6), (2, 2))
        self.feature_info = [{"num_chs": 4, "reduction": 2, "module": "stages.0"}, {"num_chs": 6, "reduction": 8, "module": "stages.1"}]


def test_broken_architectures_are_refused_naming_the_field(host: Host) -> None:
    refused(lambda: check_architecture(lambda c: _NoHead(c, (4,), (2,))), "has no `forward_head`")
    refused(lambda: check_architecture(lambda c: TinyNet(c + 1, (4,), (2,))), "logits of shape (3, 5)", "(B, num_classes) = (3, 4)")
    refused(lambda: check_architecture(_Unused), "no gradient reaches trainable parameter 'unused.weight'")
    refused(lambda: check_architecture(_LyingFeatureInfo), "stage 1 map has shape (3, 6, 8, 8)",
            "feature_info[1] says 6 channels at reduction 8")
    refused(lambda: check_architecture(lambda c: nn.Linear(3, c)), "has no `forward_features`")
    refused(lambda: check_architecture("resnet10_w8_32", host=host), "building architecture 'resnet10_w8_32' raised UserError",
            "did you mean 'resnet10_w8_32px'")


# --------------------------------------------------------------------------- selection rules


def test_every_installed_selector_conforms(host: Host) -> None:
    assert len(host.selectors)
    for entry in host.selectors:
        check_selector(entry.value)


def _best_test(history: list[Mapping[str, float]]) -> int:
    return max(range(len(history)), key=lambda i: history[i]["target_test.acc"])


def test_an_oracle_rule_and_a_label_free_rule_conform() -> None:
    check_selector(Selector("test_oracle", _best_test, oracle=True))
    check_selector(Selector("min_entropy", lambda h: min(range(len(h)), key=lambda i: h[i]["target_train.entropy"])))


def _pops(history: list[Mapping[str, float]]) -> int:
    history.pop()
    return 0


def test_broken_selectors_are_refused_naming_the_field() -> None:
    refused(lambda: check_selector(Selector("past_end", len)), "choose() returned index 1 for a history of 1 checkpoints",
            "an index in [0, 0]")
    refused(lambda: check_selector(Selector("pops", _pops)), "choose() changed the history it was given")
    refused(lambda: check_selector(Selector("sneaky", _best_test)), "reads target test labels", "set oracle=True")
    refused(lambda: check_selector(Selector("float", lambda h: len(h) - 1.0)), "choose() must return an int index, got 0.0")
    refused(lambda: check_selector(Selector("random", lambda h: int(torch.randint(len(h), ())))), "is not deterministic")
    refused(lambda: check_selector(Selector("bad name", lambda h: 0)), "selection rule name 'bad name'")
    refused(lambda: check_selector(Selector("oracle", lambda h: 0, oracle="yes")), "oracle must be True or False")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- executors


def test_every_installed_executor_that_works_here_conforms(host: Host) -> None:
    check_executor(host.executors.get("local"))


OnResult = Callable[[int, Mapping[str, Any]], None]


class _InOrder(Executor):
    name = "in_order"

    def run(self, jobs: list[Job], on_result: OnResult, ready: Ready | None = None) -> None:
        run_in_this_process(jobs, on_result, ready, run_job)


class _IgnoresReady(_InOrder):
    name = "ignores_ready"

    def run(self, jobs: list[Job], on_result: OnResult, ready: Ready | None = None) -> None:
        run_in_this_process(jobs, on_result, None, run_job)


class _ReportsTwice(_InOrder):
    name = "reports_twice"

    def run(self, jobs: list[Job], on_result: OnResult, ready: Ready | None = None) -> None:
        run_in_this_process(jobs, lambda i, r: (on_result(i, r), on_result(i, r)), ready, run_job)


class _Backwards(_InOrder):
    name = "backwards"

    def run(self, jobs: list[Job], on_result: OnResult, ready: Ready | None = None) -> None:
        for index in reversed(range(len(jobs))):
            answer = ready(index) if ready else None
            on_result(index, answer if answer is not None else run_job(jobs[index]))


class _NeedsArguments(_InOrder):
    name = "needs_arguments"

    def __init__(self, address: str) -> None:
        self.address = address


class _Nameless(Executor):
    def run(self, jobs: list[Job], on_result: OnResult, ready: Ready | None = None) -> None:
        pass


class _CrashesOnNothing(_InOrder):
    name = "crashes_on_nothing"

    def run(self, jobs: list[Job], on_result: OnResult, ready: Ready | None = None) -> None:
        max(job.settings.workers for job in jobs)


class _BrokenCheck(_InOrder):
    name = "broken_check"

    def check(self) -> None:
        raise RuntimeError("cluster config missing")


def test_a_minimal_executor_conforms() -> None:
    check_executor(_InOrder)


def test_broken_executors_are_refused_naming_the_field() -> None:
    refused(lambda: check_executor(_IgnoresReady), "whose ready() answered", "report ready's answer instead of running the job")
    refused(lambda: check_executor(_ReportsTwice), "reported job 0 twice")
    refused(lambda: check_executor(_Backwards), "about to start job 2 before job 0 it waits for (Job.after)")
    refused(lambda: check_executor(_NeedsArguments), "needs_arguments", "constructible with no arguments")
    refused(lambda: check_executor(_Nameless), "set a class attribute `name`")
    refused(lambda: check_executor(_CrashesOnNothing), "run() on 0 job(s) raised ValueError")
    refused(lambda: check_executor(_BrokenCheck), "check() raised RuntimeError: cluster config missing", "raise only UserError")
    refused(lambda: check_executor(_InOrder()), "register the class, not an instance")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- registered as a plugin


def test_the_kit_suite_conforms_in_a_host_that_holds_its_domains() -> None:
    host = load_host(extra_plugins=[("kit", KitSuitePlugin())])
    check_suite(host.suites.get("kit"), host)
    assert [t.name for t in host.suites.get("kit").tasks] == ["kit.light_to_dark", "kit.dark_to_light"]
