"""A grid killed with SIGKILL (workers included) and started again keeps every finished run exactly once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "kill_and_resume.py"


@pytest.mark.slow
def test_random_kills_lose_and_repeat_nothing_and_the_table_is_the_uninterrupted_one(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--kills", "4", "--seed", "1", "--workdir", str(tmp_path)],
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 kills; 48 runs finished; lost 0, recorded again 0" in done.stdout
