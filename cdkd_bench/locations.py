"""Where cdkd-bench keeps its cache and looks for datasets: environment first, then the usual places.

Torch-free, so that commands which only read the cache folder (the plugin index) start fast.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "CDKD_BENCH_CACHE"
DATA_ENV = "CDKD_BENCH_DATA"


def default_cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cdkd-bench"


def default_data_root() -> Path | None:
    value = os.environ.get(DATA_ENV)
    return Path(value).expanduser() if value else None
