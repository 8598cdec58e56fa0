"""What the user asked a grid to be (flags, a TOML file), checked before any work starts.

Every value is checked here, host-independent, with one sentence per mistake: an explicitly
empty value is an error (never a silent default), seeds are bounded, names carry no line
breaks. Names are checked against the installed plugins later, when the grid expands.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from cdkd_bench.errors import UserError, close_matches

# Seeds feed hash-derived generators; bounded so they fit every integer column and RNG.
MAX_SEED = 2**32 - 1
MAX_THREADS = 1024


@dataclass(frozen=True)
class GridRequest:
    """What the user asked for; ``None`` means the default the installed plugins declare (or the machine's)."""

    suite: str | None = None
    tasks: tuple[str, ...] | None = None
    teacher: str | None = None
    student: str | None = None
    recipes: tuple[str, ...] | None = None
    seeds: tuple[int, ...] | None = None
    budget: str | None = None
    hparams: Mapping[str, Any] = field(default_factory=dict)
    teacher_recipe: tuple[str, ...] = ("source",)
    """How the teachers are made: ``source``, or adaptation components (``dann``, ``dann+mcc``); several make several tables.
    A grid file may give one name or a list."""
    label_regime: str = "uda"
    selection: str | None = None
    executor: str | None = None
    store: str = "cdkd-results.sqlite"
    device: str = "auto"
    threads: int | None = None
    compile: bool = False
    """Capture the training step with torch.compile (CUDA graphs on a GPU); part of the numerics."""
    vmap_seeds: bool = False
    """Train the seeds of each configuration as one vmapped ensemble; part of the runs' numerics."""
    augmentation_parity: bool = True
    """Augment every student's source batches with the suite's policy, as the teacher's are (off: an ablation)."""
    teacher_weights: str | None = None
    """A local weights file the teacher starts from (offline pretrained weights); its content hash joins the teacher's identity."""
    student_weights: str | None = None
    """A local weights file the student starts from."""
    trials: int = 1
    """Hparam configurations tried per recipe (1: the defaults only); see cdkd_bench.search."""
    hparam_seed: int = 0
    """Seeds the configurations drawn for a search; independent of the training seeds."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and f.name != "hparams":
                check_value(f"grid field {f.name!r}", f.name, value)
        if isinstance(self.teacher_recipe, str):  # one name, as a grid file or a caller may write it
            object.__setattr__(self, "teacher_recipe", (self.teacher_recipe,))
        if not isinstance(self.hparams, Mapping):
            raise UserError(f"grid field 'hparams' must map method.hparam names to values, got {self.hparams!r}")


_LIST_ITEM = {"tasks": str, "recipes": str, "seeds": int, "teacher_recipe": str}
_INTEGER = {"threads"}
MAX_TRIALS = 1000
_COUNTS = {"trials": MAX_TRIALS, "hparam_seed": MAX_SEED}  # whole numbers with their own ranges
_BOOLEAN = {"compile", "vmap_seeds", "augmentation_parity"}


def check_value(label: str, key: str, value: Any) -> None:
    """One field of a request: its type, not empty, no control characters, numbers in range."""
    if key == "teacher_recipe" and isinstance(value, str):
        value = (value,)
    if key in _LIST_ITEM:
        kind = _LIST_ITEM[key]
        if not isinstance(value, tuple | list) or not all(isinstance(v, kind) and not isinstance(v, bool) for v in value):
            raise UserError(f"{label} must be a list of {kind.__name__}s, got {value!r}")
        if not value:
            raise UserError(f"{label} is empty; name at least one, or leave it out to use the suite's default")
        for item in value:
            if kind is str:
                _check_text(label, item)
            elif not 0 <= item <= MAX_SEED:
                raise UserError(f"{label} holds seed {item}; seeds must be whole numbers from 0 to {MAX_SEED}")
    elif key in _BOOLEAN:
        if not isinstance(value, bool):
            raise UserError(f"{label} must be true or false, got {value!r}")
    elif key in _COUNTS:
        low = 0 if key == "hparam_seed" else 1
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= _COUNTS[key]:
            raise UserError(f"{label} must be a whole number from {low} to {_COUNTS[key]}, got {value!r}")
    elif key in _INTEGER:
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_THREADS:
            raise UserError(f"{label} must be a whole number from 1 to {MAX_THREADS}, got {value!r}")
    else:
        if not isinstance(value, str):
            raise UserError(f"{label} must be a string, got {value!r}")
        _check_text(label, value)


def _check_text(label: str, text: str) -> None:
    if not text.strip():
        raise UserError(f"{label} has an empty value; give a name, or leave it out to use the default")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise UserError(f"{label} has a line break or control character in {text!r}")


def read_grid_file(path: Path) -> dict[str, Any]:
    """Parse a TOML grid file into GridRequest fields, rejecting unknown keys and wrong types."""
    where = f"grid file {str(path)!r}"
    try:
        with open(path, "rb") as handle:
            raw = tomllib.load(handle)
    except FileNotFoundError:
        raise UserError(f"{where} does not exist") from None
    except IsADirectoryError:
        raise UserError(f"{where} is a folder, not a TOML file") from None
    except OSError as exc:
        raise UserError(f"{where} cannot be read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise UserError(f"{where} is not UTF-8 text; save it as UTF-8 TOML") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{where} is not valid TOML: {exc}") from None
    known = {f.name for f in fields(GridRequest)}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            matches = close_matches(key, known)
            hint = f"; did you mean {' or '.join(repr(m) for m in matches)}?" if matches else ""
            raise UserError(f"unknown key {key!r} in {where}{hint} (known keys: {', '.join(sorted(known))})")
        if key == "hparams":
            value = _flatten_hparams(value)
        else:
            check_value(f"grid file key {key!r}", key, value)
            if isinstance(value, list):
                value = tuple(value)
        out[key] = value
    return out


def _flatten_hparams(value: Any) -> dict[str, Any]:
    """Accept both ``[hparams] "kd.temperature" = 2`` and ``[hparams.kd] temperature = 2``."""
    if not isinstance(value, dict):
        raise UserError(f"grid file key 'hparams' must be a table, got {value!r}")
    flat: dict[str, Any] = {}
    for key, item in value.items():
        if isinstance(item, dict):
            for name, inner in item.items():
                flat[f"{key}.{name}"] = inner
        else:
            flat[key] = item
    return flat
