"""`cdkd-bench leaderboard --format`: which files it writes, and a wrong format is one sentence."""

from __future__ import annotations

from pathlib import Path

import pytest
from leaderboard_runs import leaderboard_runs

from cdkd_bench.cli import main
from cdkd_bench.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "r.sqlite"
    results = Store(path)
    for run in leaderboard_runs(("source_only", "kd")):
        results.record(run.spec, {"status": run.status, "metrics": run.metrics, "provenance": run.provenance})
    return path


def test_format_writes_the_files_asked_for(store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "boards"
    assert main(["leaderboard", "--store", str(store), "--out-dir", str(out), "--format", "csv,json"]) == 0
    printed, err = capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == ["embedded.csv", "embedded.json"]
    assert printed.startswith("# Leaderboard: suite `embedded`")  # the Markdown page is printed whatever is written
    assert f"leaderboard written to {out / 'embedded.csv'}, {out / 'embedded.json'}" in err
    assert main(["leaderboard", "--store", str(store), "--out-dir", str(out), "--format", "all"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [f"embedded.{ext}" for ext in ("csv", "html", "json", "md", "tex")]


def test_the_default_is_the_markdown_page_alone(store: Path, tmp_path: Path) -> None:
    assert main(["leaderboard", "--store", str(store), "--out-dir", str(tmp_path / "boards")]) == 0
    assert [p.name for p in (tmp_path / "boards").iterdir()] == ["embedded.md"]


@pytest.mark.parametrize("formats", ["md,pdf", "", "md,,csv"])
def test_an_unknown_format_is_one_sentence_and_writes_nothing(store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                             formats: str) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["leaderboard", "--store", str(store), "--out-dir", str(tmp_path / "boards"), "--format", formats])
    assert exit_.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("cdkd-bench: error: argument --format: unknown leaderboard format")
    assert "choose from md, csv, json, tex, html or all" in lines[0]
    assert not (tmp_path / "boards").exists()
