"""Listing the image files of the natural-image suites (Office-31, Office-Home, VisDA-2017, DomainNet).

A file-backed domain only *lists* its images and labels here, in a fixed sorted order; the host
decodes them into its cache. Three layouts are covered:

* a class-folder tree (``<folder>/<class>/*.jpg``), read with torchvision's ``ImageFolder``
  helpers but labelled by the position of each class in the suite's class list;
* an image list file (``relative/path.jpg <label>`` per line);
* a held-out split for datasets that publish none: an image is a test image when the CRC-32 of
  its path relative to the data root is divisible by 5. It needs no seed and an added file never
  moves another one, so ``target_oracle`` has held-out images to be scored on while the
  transductive protocol still adapts to, and scores on, every image.

Every problem with the files is a ``UserError`` of one sentence naming the file or folder.
The suites' shared training settings (budgets, augmentation) live at the end of this module.
Nothing here imports torch until a domain is actually listed.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cdkd_bench import Augmentation, Budget, DataContext, ImageFiles, UserError

DATA_ROOT_HINT = "pass --data-root or set CDKD_BENCH_DATA"
HELD_OUT_EVERY = 5
"""One image in this many (by path checksum) is held out as test in datasets without an official split."""


# --------------------------------------------------------------------------- where the files are


def data_root(context: DataContext, domain: str, expected: str) -> Path:
    """The data root, or the error saying how to give one; ``expected`` names what should lie below it."""
    if context.data_root is None:
        raise UserError(f"domain {domain!r} reads the image files of {expected}, but no data root is set: {DATA_ROOT_HINT}")
    return Path(context.data_root)


def require_folder(folder: Path, domain: str, layout: str, dataset: str, homepage: str,
                   look_for: Iterable[tuple[Path, Path]] = ()) -> None:
    """Raise the error for a missing domain folder: the layout expected and where the dataset is published.

    ``look_for`` pairs a place the files often lie (after unpacking the published archive, or with
    the data root set one level too deep) with where they belong; the first that exists is named.
    """
    if folder.is_dir():
        return
    found = next(((str(seen), str(target)) for seen, target in look_for if seen.is_dir()), None)
    moved = f"; {found[0]!r} exists: move or rename it to {found[1]!r}" if found else ""
    raise UserError(
        f"{str(folder)!r} is not a folder: domain {domain!r} expects the layout {layout} "
        f"({dataset}, published at {homepage}){moved}"
    )


def require_file(path: Path, domain: str, layout: str, dataset: str, homepage: str) -> None:
    """Raise the error for a missing list file, naming the layout expected and where the dataset is published."""
    if not path.is_file():
        raise UserError(
            f"{str(path)!r} is missing: domain {domain!r} expects the layout {layout} ({dataset}, published at {homepage})"
        )


# --------------------------------------------------------------------------- class folders


def list_class_folders(folder: Path, classes: Sequence[str]) -> list[tuple[Path, int]]:
    """Every image below ``folder/<class>/`` with its class's position in ``classes``, sorted by path.

    The folders are found and walked by torchvision's ``ImageFolder`` helpers (``find_classes``,
    ``make_dataset``, ``IMG_EXTENSIONS``), but a class's index is its place in ``classes``, not in
    the alphabetical order of the folders. A folder that names no class, or a class with no
    folder, is an error; a class folder may be empty. Hidden folders (``.name``) are skipped.
    """
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    index = {name: i for i, name in enumerate(classes)}
    try:
        found, _ = find_classes(folder)
    except FileNotFoundError:  # not one sub-folder: every class is missing, reported below
        found = []
    found = [name for name in found if not name.startswith(".")]
    unknown = [name for name in found if name not in index]
    if unknown:
        raise UserError(
            f"{str(folder / unknown[0])!r} is not a class folder: {folder.name!r} holds one folder per class, "
            f"named as in the suite's {len(classes)} classes ({_some(classes)})"
        )
    present = set(found)
    missing = [name for name in classes if name not in present]
    if missing:
        more = f" (nor for {len(missing) - 1} more of the {len(classes)} classes)" if len(missing) > 1 else ""
        raise UserError(f"{str(folder)!r} has no folder for class {missing[0]!r}{more}")
    samples = make_dataset(folder, index, extensions=IMG_EXTENSIONS, allow_empty=True)
    if not samples:
        raise UserError(f"{str(folder)!r} has all {len(classes)} class folders but no image files ({', '.join(IMG_EXTENSIONS)}) in them")
    return sorted((Path(path), label) for path, label in samples)


def _some(names: Sequence[str], shown: int = 4) -> str:
    listed = ", ".join(names[:shown])
    return f"{listed}, …" if len(names) > shown else listed


# --------------------------------------------------------------------------- image list files


@dataclass(frozen=True)
class ListedImage:
    """One line of an image list file."""

    line: int
    relative: str
    """The path as the list gives it (relative to the list's base folder, ``/``-separated)."""
    path: Path
    label: int


def read_image_list(list_file: Path, base: Path, num_classes: int) -> list[ListedImage]:
    """Parse ``list_file`` (``relative/path.jpg <label>`` per line, blank lines skipped): paths relative to ``base``.

    A line that does not parse, a label outside ``0..num_classes-1`` or a listed file that does
    not exist is an error naming the list file, the line and the path.
    """
    try:
        text = list_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UserError(f"cannot read the image list {str(list_file)!r} ({reason})") from None
    images = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        where = f"{str(list_file)!r} line {number}"
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].lstrip("+-").isdigit():
            raise UserError(f"{where} does not read as '<relative path> <label>': {line!r}")
        relative, label = parts[0].replace("\\", "/"), int(parts[1])
        if relative.startswith("/") or ".." in relative.split("/"):
            raise UserError(f"{where} names {relative!r}, which is not a path inside {str(base)!r}")
        if not 0 <= label < num_classes:
            raise UserError(f"{where} gives {relative!r} the label {label}, outside 0..{num_classes - 1}")
        path = base / relative
        if not path.is_file():
            raise UserError(f"{where} names {relative!r}, which does not exist in {str(base)!r}")
        images.append(ListedImage(number, relative, path, label))
    if not images:
        raise UserError(f"the image list {str(list_file)!r} lists no images")
    return images


# --------------------------------------------------------------------------- held-out split


def held_out(relative: str) -> bool:
    """Whether the image at ``relative`` (its ``/``-separated path below the data root) is a test image."""
    return zlib.crc32(relative.encode("utf-8")) % HELD_OUT_EVERY == 0


def relative_path(path: Path, root: Path) -> str:
    """``path`` below ``root``, ``/``-separated: the key of the held-out split."""
    return path.relative_to(root).as_posix()


def held_out_split(images: Iterable[tuple[Path, int]], root: Path) -> tuple[ImageFiles, ImageFiles]:
    """Train and test image files of a dataset without an official split, each sorted by path."""
    train: list[tuple[Path, int]] = []
    test: list[tuple[Path, int]] = []
    for path, label in sorted(images):
        (test if held_out(relative_path(path, root)) else train).append((path, label))
    return image_files(train), image_files(test)


def image_files(images: Sequence[tuple[Path, int]]) -> ImageFiles:
    return ImageFiles(tuple(path for path, _ in images), tuple(label for _, label in images))


# --------------------------------------------------------------------------- shared suite settings

# TLlib's training transform for these datasets: resize to 256, a random resized crop of 8-100 %
# of the area to 224, and a horizontal flip. The teacher's policy and, under augmentation parity,
# every student's.
TEACHER_AUGMENTATION = Augmentation(crop_area=(0.08, 1.0), hflip_probability=0.5)
WEAK_VIEW = Augmentation(crop_area=(0.6, 1.0), hflip_probability=0.5)
STRONG_VIEW = Augmentation(crop_area=(0.08, 1.0), hflip_probability=0.5, gain=(0.7, 1.3), bias=0.2)
VIEWS = {"weak": WEAK_VIEW, "strong": STRONG_VIEW}

# ImageNet-pretrained networks fine-tuned with AdamW and a cosine schedule; the body learns at a tenth
# of the classifier's rate (TLlib's recipe). `paper` is TLlib's length: 20 epochs of 1,000 iterations, batch 32.
_LR = dict(lr=1e-3, backbone_lr_mult=0.1)
BUDGETS = {
    # `smoke` only checks that everything runs (tests); its numbers mean nothing.
    "smoke": Budget(teacher_steps=4, student_steps=2, batch_size=8, eval_points=1, **_LR),
    "quick": Budget(teacher_steps=500, student_steps=500, batch_size=32, eval_points=2, **_LR),
    "default": Budget(teacher_steps=4000, student_steps=4000, batch_size=32, eval_points=4, **_LR),
    "paper": Budget(teacher_steps=20_000, student_steps=20_000, batch_size=32, eval_points=20, **_LR),
}

SUITE_SETTINGS: dict[str, Any] = dict(
    image_size=256,
    crop_size=224,
    pretrained=True,
    budgets=BUDGETS,
    default_teacher="resnet50",
    default_student="resnet18",
    default_recipes=("source_only", "kd", "target_oracle"),
    default_seeds=(0, 1),
    default_budget="quick",
    teacher_augmentation=TEACHER_AUGMENTATION,
    views=VIEWS,
)
"""The keyword arguments every natural-image suite passes to ``Suite``."""
