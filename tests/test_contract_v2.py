"""Contract v2 end to end through the engine: owned steps, views, evaluation hooks, checkpoints, heterogeneous pairs."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
from helpers import ContractV2Methods, CountsEvaluations, ReadsViews, TwoPhase

from cdkd_bench import hookimpl
from cdkd_bench.cli import main
from cdkd_bench.engine import EngineSettings, execute, execute_safely
from cdkd_bench.errors import UserError
from cdkd_bench.grid import GridRequest, expand, run_grid
from cdkd_bench.leaderboard import build_tables
from cdkd_bench.plugins import load_host
from cdkd_bench.store import Store
from cdkd_bench.testing import TinyNet

TASK = ("printed_to_handwritten",)


@pytest.fixture(scope="module")
def v2_host():
    return load_host(extra_plugins=[("contract-v2", ContractV2Methods())])


def only(host, recipe: str, **request):
    specs = expand(host, GridRequest(tasks=TASK, recipes=(recipe,), seeds=(0,), budget="smoke", **request))
    return next(s for s in specs if s.recipe == recipe)


def test_a_component_that_owns_the_step_drives_it_and_still_composes_with_kd(v2_host, cache_dir: Path) -> None:
    TwoPhase.phases.clear()
    spec = only(v2_host, "kd+two_phase")
    result = execute(spec, v2_host, EngineSettings(cache_dir=cache_dir, device="cpu"))
    assert TwoPhase.phases[:2] == [("joint", ["kd.kd_source", "kd.kd_target"]), ("head", [])]
    assert len(TwoPhase.phases) == 2 * spec.steps
    assert {"train_loss.two_phase.joint", "train_loss.two_phase.entropy"} <= set(result["metrics"])


def test_two_components_that_own_the_step_are_refused_before_training(v2_host) -> None:
    with pytest.raises(UserError, match="recipe 'another_owner\\+two_phase' has two components that own the training step"):
        expand(v2_host, GridRequest(tasks=TASK, recipes=("two_phase+another_owner",), budget="smoke"))


def test_views_are_augmented_copies_of_the_same_images(v2_host, cache_dir: Path) -> None:
    ReadsViews.seen.clear()
    execute(only(v2_host, "reads_views"), v2_host, EngineSettings(cache_dir=cache_dir, device="cpu"))
    assert ReadsViews.seen and all(all(flags) for flags in ReadsViews.seen)


def test_a_view_the_suite_does_not_define_is_refused_before_training(v2_host) -> None:
    with pytest.raises(UserError, match="component 'reads_unknown_view' reads view 'blurry', which suite 'embedded' does not define "
                                        "\\(it defines: strong, weak\\)"):
        expand(v2_host, GridRequest(tasks=TASK, recipes=("reads_unknown_view",), budget="smoke"))


def test_intermediates_an_architecture_lacks_are_refused_before_training(host) -> None:
    with pytest.raises(UserError, match="component 'fitnet' cannot work with teacher 'resnet18_w16_32px' and student 'resnet10_w8_32px': "
                                        "fitnet stage -9 does not exist in the student 'resnet10_w8_32px' \\(5 stages\\)"):
        expand(host, GridRequest(tasks=TASK, recipes=("fitnet",), budget="smoke", hparams={"fitnet.stage": -9}))
    with pytest.raises(UserError, match="component 'at' asks for stage -3 of architecture 'tiny_two_stage'"):
        expand(_host_with_two_stage_net(), GridRequest(tasks=TASK, recipes=("at",), budget="smoke", student="tiny_two_stage"))


class _TwoStageResolver:
    """Resolves 'tiny_two_stage' to a network with only two stages (AT reads three)."""

    @hookimpl
    def cdkd_resolve_architecture(self, name, num_classes, pretrained):  # type: ignore[no-untyped-def]
        return TinyNet(num_classes, (4, 8), (2, 2)) if name == "tiny_two_stage" else None

    @hookimpl
    def cdkd_architecture_names(self):  # type: ignore[no-untyped-def]
        return ["tiny_two_stage"]


def _host_with_two_stage_net():
    return load_host(extra_plugins=[("two-stage", _TwoStageResolver())])


def test_every_checkpoint_is_evaluated_and_hooks_change_only_the_evaluated_copy(v2_host, cache_dir: Path) -> None:
    CountsEvaluations.calls.clear()
    spec = only(v2_host, "counts_evaluations")
    metrics = execute(spec, v2_host, EngineSettings(cache_dir=cache_dir, device="cpu"))["metrics"]
    assert [c["step"] for c in metrics["checkpoints"]] == [5, 10]  # smoke: 10 steps, 2 evaluation points
    # once per checkpoint, with every unlabelled target image: handwritten is a transductive target (1,438 + 359)
    assert CountsEvaluations.calls == [1797, 1797]
    # the hook pushed every prediction to the last class on the copy, so accuracy is that class's share
    assert all(c["target_test.per_class_acc"][:9] == [0.0] * 9 for c in metrics["checkpoints"])
    plain = execute(only(v2_host, "source_only"), v2_host, EngineSettings(cache_dir=cache_dir, device="cpu"))["metrics"]
    assert plain["target_test.acc"] != metrics["target_test.acc"]  # same init and batches: only the hook differs


def test_a_selection_rule_is_applied_to_stored_checkpoints_without_retraining(v2_host, cache_dir: Path) -> None:
    store = Store(cache_dir.parent / "r.sqlite")
    specs = expand(v2_host, GridRequest(tasks=TASK, recipes=("kd",), seeds=(0,), budget="smoke"))
    run_grid(v2_host, specs, store, EngineSettings(cache_dir=cache_dir, device="cpu"), show_progress=False, log=lambda _m: None)
    runs = store.runs()
    last, first = build_tables(runs, v2_host, "last")[0], build_tables(runs, v2_host, "first")[0]
    assert (last.protocol.selection, first.protocol.selection) == ("last", "first")
    kd = {t.protocol.selection: next(r for r in t.rows if r.name == "kd") for t in (last, first)}
    checkpoints = next(r for r in runs if r.spec.recipe == "kd").metrics["checkpoints"]
    task = specs[0].task
    assert kd["last"].values[task][0] == checkpoints[-1]["target_test.acc"]
    assert kd["first"].values[task][0] == checkpoints[0]["target_test.acc"]


# One ViT run costs about 15-20 s on two cores, so every ViT student run is in `tox -e slow` (check_method covers
# these components on a heterogeneous pair in every run; the default run must stay under 10 minutes).
@pytest.mark.parametrize("recipe", [pytest.param(r, marks=pytest.mark.slow) for r in ("fitnet", "at", "sp", "crd")])
def test_a_resnet_teacher_distils_into_a_vit_student_through_feature_components(host, cache_dir: Path, recipe: str) -> None:
    spec = only(host, recipe, student="vit_tiny_p4_32px")
    result = execute_safely(partial(execute, spec, host, EngineSettings(cache_dir=cache_dir, device="cpu")))
    assert result["status"] == "done", (recipe, result.get("error"))
    assert result["metrics"]["student.params"] > 400_000 and result["metrics"]["teacher.params"] < 800_000


V1_METHOD = """
from dataclasses import dataclass, field
import cdkd_bench

class OldStyleEntropy(cdkd_bench.Method):
    '''Entropy minimisation written for the first contract: only `loss`, `step.student(domain)`.'''
    name = "old_style_entropy"
    family = "adaptation"
    uses_target = True

    @dataclass(frozen=True)
    class Hparams:
        weight: float = field(default=0.1, metadata={"search": (0.01, 1.0, "log")})

    def loss(self, step):
        p = step.student("target").logits.softmax(1)
        return {"entropy": -self.hparams.weight * (p * p.clamp_min(1e-8).log()).sum(1).mean()}

@cdkd_bench.hookimpl
def cdkd_register_methods(register):
    register(OldStyleEntropy)
"""


def test_a_v1_method_from_its_own_package_lists_runs_and_reaches_the_leaderboard(
    plugins, cache_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plugins.install("cdkd_old_style", V1_METHOD, version="0.9.0")
    assert main(["list", "methods", "--filter", "old_*"]) == 0
    assert "old_style_entropy" in capsys.readouterr().out
    assert main(["run", "--budget", "smoke", "--tasks", TASK[0], "--seeds", "0", "--recipes", "old_style_entropy", "--no-progress"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| old_style_entropy |"))
    assert "(n=1)" in row


def test_a_job_is_plain_data_that_another_process_runs_with_its_own_host(cache_dir: Path) -> None:
    import multiprocessing
    import pickle

    from cdkd_bench import Job, run_job

    host = load_host()
    settings = EngineSettings(cache_dir=cache_dir, device="cpu", threads=1)
    job = Job("run", only(host, "kd", threads=1, device="cpu"), settings)
    assert pickle.loads(pickle.dumps(job)) == job
    with multiprocessing.get_context("spawn").Pool(1) as pool:   # a fresh interpreter: no host, no closures
        remote = pool.apply(run_job, (job,))
    local = run_job(job)
    assert remote["status"] == local["status"] == "done"
    assert remote["metrics"]["target_test.acc"] == local["metrics"]["target_test.acc"]
