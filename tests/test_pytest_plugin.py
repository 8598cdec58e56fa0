"""The pytest fixtures for plugin authors, used from an author's own test file as pytest loads them (the pytest11 entry point)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdkd_bench.plugins import Host

pytest_plugins = ["pytester"]

AUTHOR_TESTS = '''
import dataclasses

import pytest
import torch

from cdkd_bench import Method, hookimpl
from cdkd_bench.testing import check_method, check_suite


class Agree(Method):
    """Pulls the student's logits towards the teacher's and reads a stage map and a view (a tiny KD)."""

    name = "agree"
    family = "distillation"
    needs_teacher = True
    uses_target = True
    intermediates = (-1,)
    views = {"target": ("weak",)}

    @dataclasses.dataclass(frozen=True)
    class Hparams:
        weight: float = dataclasses.field(default=1.0, metadata={"search": (0.1, 10.0, "log")})

    def loss(self, step):
        student, teacher = step.student("source"), step.teacher("source")
        assert student.stage(-1).dim() == 4 and teacher.stage(-1).dim() == 4
        weak = step.student("target", "weak").logits
        return {"agree": self.hparams.weight * (student.logits - teacher.logits).pow(2).mean() + 0 * weak.sum()}


class AgreePlugin:
    @hookimpl
    def cdkd_register_methods(self, register):
        register(Agree)


class StealsKd:
    @hookimpl
    def cdkd_register_methods(self, register):
        register(type("Kd", (Agree,), {"name": "kd"}))


def test_the_host_holds_the_installed_plugins_and_mine(cdkd_host):
    host = cdkd_host(AgreePlugin())
    assert "agree" in host.methods and "kd" in host.methods and "embedded" in host.suites


def test_a_refused_plugin_fails_the_test_unless_asked_not_to(cdkd_host):
    host = cdkd_host(("thief", StealsKd()), strict=False)
    assert "already registered" in {p.name: p.error for p in host.failed_plugins}["thief"]
    with pytest.raises(pytest.fail.Exception, match="plugin 'thief' was refused by the host"):
        cdkd_host(("thief", StealsKd()))


def test_pairs_of_both_kinds(cdkd_pair):
    student, teacher = cdkd_pair.info.student.stages, cdkd_pair.info.teacher.stages
    same_sizes = [s.reduction for s in student] == [t.reduction for t in teacher]
    assert same_sizes == (cdkd_pair.kind == "homogeneous")
    assert not any(p.requires_grad for p in cdkd_pair.teacher.parameters())


def test_one_step_on_each_pair(cdkd_step, cdkd_pair):
    kit = cdkd_step(Agree, pair=cdkd_pair)
    terms = kit.loss()
    assert set(terms) == {"agree"} and terms["agree"].dim() == 0 and torch.isfinite(terms["agree"])
    terms["agree"].backward()
    assert any(p.grad is not None for p in kit.pair.student.parameters())
    assert kit.step.target.y is None and kit.labels.shape == (6,)


def test_a_step_with_other_hparams(cdkd_step):
    kit = cdkd_step(Agree, Agree.Hparams(weight=0.0), batch=4, num_classes=3)
    assert float(kit.loss()["agree"].detach()) == 0.0 and kit.step.source.x.shape[0] == 4


def test_the_kit_still_checks_methods():
    check_method(Agree)


def test_a_real_grid_on_the_tiny_suite(cdkd_tiny_suite):
    check_suite(cdkd_tiny_suite.suite, cdkd_tiny_suite.host)
    outcome = cdkd_tiny_suite.run(["agree"], plugins=[AgreePlugin()])
    assert (outcome.summary.done, outcome.summary.failed) == (3, 0), outcome.log
    assert sorted(outcome.by_recipe()) == ["agree", "source_only", "target_oracle"]
    assert all(run.spec.task == "kit.light_to_dark" for run in outcome.runs)
    again = cdkd_tiny_suite.run(["agree"], plugins=[AgreePlugin()])
    assert again.summary.skipped == 3
'''


@pytest.fixture
def warm(host: Host, tmp_path: Path) -> None:
    """Import here everything the author's tests import (the plugins, the engine, the kit).

    pytester runs them in this process and afterwards drops every module they imported
    first; a dropped C extension (sqlite3, numpy's) cannot be imported again, which would
    break later tests of this session. A grid on the tiny suite imports the whole engine.
    """
    import cdkd_bench.testing  # noqa: F401
    from cdkd_bench.conformance import kit_suite

    kit_suite(tmp_path / "warm-up").run()


def test_an_authors_tests_use_every_fixture_and_pass(pytester: pytest.Pytester, warm: None) -> None:
    pytester.makepyfile(test_my_plugin=AUTHOR_TESTS)
    result = pytester.runpytest("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=9)


def test_every_fixture_is_documented(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--fixtures", "-p", "no:cacheprovider")
    text = result.stdout.str()
    for name, words in (("cdkd_host", "returns a ``Host``"), ("cdkd_tiny_suite", "A tiny generated suite"),
                        ("cdkd_step", "A factory"), ("cdkd_pair", "teacher/student pair"), ("cdkd_cache", "cache folder")):
        assert f"{name} -- " in text and words in text, name


def test_pytest_starts_without_importing_torch(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_startup="""
        import sys

        def test_nothing_heavy_was_imported(request):
            assert request.config.pluginmanager.has_plugin("cdkd_bench")
            assert "torch" not in sys.modules and "cdkd_bench.plugins" not in sys.modules
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=1)
