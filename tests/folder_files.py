"""Tiny stand-ins for the natural-image datasets, written in their real layouts, for tests.

Each writer creates ``<root>/<dataset>/…`` exactly as the suite's ``locate`` expects it, with
small images (40×30 px) whose colour encodes the class (hue) and the domain (saturation), so a
model can tell classes apart. Every class folder is created (a missing class folder is an
error); images are written only for ``classes`` (names or indices; all classes by default).
Each writer returns ``root``, to pass as the data root.
"""

from __future__ import annotations

import colorsys
import io
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path

from PIL import Image

from cdkd_plugins.domains.domainnet import DOMAINNET_CLASSES, DOMAINNET_DOMAINS
from cdkd_plugins.domains.office import OFFICE31_CLASSES, OFFICE31_DOMAINS, OFFICEHOME_CLASSES, OFFICEHOME_DOMAINS
from cdkd_plugins.domains.visda import VISDA_CLASSES, VISDA_DOMAINS

IMAGE_SIZE = (40, 30)  # width, height

Classes = Iterable[str | int] | None


@cache
def image_bytes(label: int, num_classes: int, domain: int, variant: int, fmt: str = "JPEG") -> bytes:
    """A solid-colour image: hue from the class, saturation from the domain, brightness from the variant."""
    hue = label / num_classes
    saturation = 0.9 - 0.15 * (domain % 5)
    value = 0.95 - 0.1 * (variant % 4)
    rgb = tuple(round(255 * c) for c in colorsys.hsv_to_rgb(hue, saturation, value))
    buffer = io.BytesIO()
    Image.new("RGB", IMAGE_SIZE, rgb).save(buffer, format=fmt)
    return buffer.getvalue()


def _chosen(classes: Classes, names: Sequence[str]) -> list[int]:
    """Indices of the classes to write images for (every class when None)."""
    if classes is None:
        return list(range(len(names)))
    return sorted({c if isinstance(c, int) else names.index(c) for c in classes})


def _write_class_folders(folder: Path, names: Sequence[str], classes: Classes, per_class: int, domain: int, prefix: str) -> None:
    chosen = set(_chosen(classes, names))
    for label, name in enumerate(names):
        (folder / name).mkdir(parents=True, exist_ok=True)
        if label in chosen:
            for i in range(per_class):
                (folder / name / f"{prefix}_{label:03d}_{i:04d}.jpg").write_bytes(image_bytes(label, len(names), domain, i))


def write_office31_root(root: Path, per_class: int = 1, classes: Classes = None) -> Path:
    """``<root>/office31/{amazon,dslr,webcam}/images/<class>/*.jpg``: ``per_class`` images per class and domain."""
    for d, (name, _, _) in enumerate(OFFICE31_DOMAINS):
        _write_class_folders(root / "office31" / name / "images", OFFICE31_CLASSES, classes, per_class, d, name)
    return root


def write_officehome_root(root: Path, per_class: int = 1, classes: Classes = None) -> Path:
    """``<root>/officehome/{Art,Clipart,Product,Real_World}/<class>/*.jpg``: ``per_class`` images per class and domain."""
    for d, (_, folder, _, _) in enumerate(OFFICEHOME_DOMAINS):
        _write_class_folders(root / "officehome" / folder, OFFICEHOME_CLASSES, classes, per_class, d, folder.lower())
    return root


def write_visda_root(root: Path, per_class: int = 1, classes: Classes = None) -> Path:
    """``<root>/visda2017/{train,validation}/image_list.txt`` and the images they name (PNG renderings, JPEG photos)."""
    for d, (name, split, _, _) in enumerate(VISDA_DOMAINS):
        folder = root / "visda2017" / split
        fmt, suffix = ("PNG", "png") if name == "synthetic" else ("JPEG", "jpg")
        lines = []
        for label in _chosen(classes, VISDA_CLASSES):
            class_name = VISDA_CLASSES[label]
            (folder / class_name).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                relative = f"{class_name}/{name}_{label:02d}_{i:04d}.{suffix}"
                (folder / relative).write_bytes(image_bytes(label, len(VISDA_CLASSES), d, i, fmt))
                lines.append(f"{relative} {label}\n")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "image_list.txt").write_text("".join(lines), encoding="utf-8")
    return root


def write_domainnet_root(root: Path, per_class: int = 1, classes: Classes = None, domains: Iterable[str] | None = None) -> Path:
    """``<root>/domainnet/<domain>_{train,test}.txt`` and ``<domain>/<class>/*.jpg``: ``per_class`` images per class
    in each split. All 345 classes in six domains is 4,140 files: name a few ``classes`` (or ``domains``) when that is too many."""
    base = root / "domainnet"
    names = [name for name, _, _ in DOMAINNET_DOMAINS]
    for name in names if domains is None else list(domains):
        d = names.index(name)
        lines: dict[str, list[str]] = {"train": [], "test": []}
        for label in _chosen(classes, DOMAINNET_CLASSES):
            class_name = DOMAINNET_CLASSES[label]
            (base / name / class_name).mkdir(parents=True, exist_ok=True)
            for split, offset in (("train", 0), ("test", per_class)):
                for i in range(offset, offset + per_class):
                    relative = f"{name}/{class_name}/{name}_{label + 1:03d}_{i + 1:06d}.jpg"
                    (base / relative).write_bytes(image_bytes(label, len(DOMAINNET_CLASSES), d, i))
                    lines[split].append(f"{relative} {label}\n")
        (base / name).mkdir(parents=True, exist_ok=True)
        for split, written in lines.items():
            (base / f"{name}_{split}.txt").write_text("".join(written), encoding="utf-8")
    return root
