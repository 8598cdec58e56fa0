from __future__ import annotations

from pathlib import Path

import pytest

from cdkd_bench.cli import main

SMOKE = ["run", "--budget", "smoke", "--tasks", "textured_to_handwritten", "--seeds", "0,1", "--no-progress"]


def test_run_end_to_end_then_resume(cache_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(SMOKE) == 0
    out, err = capsys.readouterr()
    assert "grid: 6 done, 0 failed, 0 already done; 2 teachers trained" in err
    board = Path("leaderboards/embedded.md").read_text()
    assert out.strip() == board.strip()
    for row in ("teacher `resnet18_w16_32px`", "source_only (student on source only)", "| kd |", "target_oracle"):
        assert row in board
    assert "(n=2)" in board
    assert "Produced by: `cdkd-bench run --budget smoke --tasks textured_to_handwritten --seeds 0,1 --no-progress`." in board

    assert main(SMOKE) == 0
    _, err = capsys.readouterr()
    assert "grid: 0 done, 0 failed, 6 already done; 0 teachers trained" in err

    assert main(["leaderboard"]) == 0
    assert capsys.readouterr().out.strip() == board.strip()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "--suite", "embeded"], "unknown suite 'embeded'; did you mean 'embedded'?"),
        (["run", "--tasks", "fonts_to_mnist"], "unknown task of suite 'embedded' 'fonts_to_mnist'"),
        (["run", "--recipes", "kdd"], "unknown method 'kdd'; did you mean 'kd'"),
        (["run", "--student", "resnet10_w8"], "unknown architecture 'resnet10_w8'; did you mean 'resnet10_w8_32px'"),
        (["run", "--set", "kd.tempreature=2"], "unknown hparam 'kd.tempreature'; did you mean 'kd.temperature'?"),
        (["run", "--set", "kd.temperature=-1"], "invalid hparam for kd: temperature must be positive, got -1.0"),
        (["run", "--grid", "missing.toml"], "grid file 'missing.toml' does not exist"),
        (["run", "--device", "tpu"], "unknown device 'tpu'"),
        (["leaderboard", "--store", "nothing.sqlite"], "'nothing.sqlite' does not exist; give a results store"),
    ],
)
def test_user_mistakes_get_one_sentence_and_exit_2(cache_dir: Path, capsys: pytest.CaptureFixture[str], argv, message) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("cdkd-bench: error: ") and message in lines[0]
    assert "Traceback" not in err


def test_malformed_grid_file(cache_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    Path("grid.toml").write_text('recipes = "kd"\n')
    assert main(["run", "--grid", "grid.toml"]) == 2
    assert "grid file key 'recipes' must be a list of strs" in capsys.readouterr().err


def test_list_shows_plugin_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "methods"]) == 0
    out = capsys.readouterr().out
    assert "kd" in out and "[kd 0.1.0]" in out
    assert main(["list", "archs", "--filter", "*_32px"]) == 0
    assert "resnet10_w8_32px" in capsys.readouterr().out


def test_a_broken_plugin_is_reported_by_name_and_the_rest_still_work(plugins, capsys: pytest.CaptureFixture[str]) -> None:
    plugins.install("cdkd_broken_cli", "raise ImportError('missing dependency foo')\n")
    assert main(["list", "suites"]) == 0
    captured = capsys.readouterr()
    assert "embedded" in captured.out
    assert ("plugin 'cdkd_broken_cli' (distribution cdkd_broken_cli 1.2.3) failed to load and was skipped: "
            "ImportError while importing: missing dependency foo") in captured.err
