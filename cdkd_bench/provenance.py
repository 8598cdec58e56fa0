"""Where a result came from: package, plugin and library versions, commit, device."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

import cdkd_bench


def git_commit() -> str | None:
    """The commit of the cdkd-bench checkout in use, when it runs from a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(cdkd_bench.__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} thread{'s' if torch.get_num_threads() > 1 else ''})"


def provenance(device: torch.device, plugin_versions: dict[str, str], command: str = "") -> dict[str, Any]:
    import timm

    return {
        "command": command,
        "cdkd_bench": cdkd_bench.__version__,
        "git_commit": git_commit(),
        "plugins": plugin_versions,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "timm": timm.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": describe_device(device),
    }
