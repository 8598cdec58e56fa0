"""The VisDA-2017 classification suite: renderings of 3D models (synthetic) to photographs (real), one task.

Layout (``<data_root>`` is ``--data-root`` or ``CDKD_BENCH_DATA``), as the challenge publishes it::

    <data_root>/visda2017/train/image_list.txt          synthetic: "aeroplane/<file>.png 0" per line
    <data_root>/visda2017/train/<class>/<file>.png
    <data_root>/visda2017/validation/image_list.txt     real
    <data_root>/visda2017/validation/<class>/<file>.jpg

Paths in a list are relative to its folder. The real domain is the target, scored by the
transductive protocol; for ``target_oracle`` one image in five, by the CRC-32 of its path, is
held out as test (``image_layouts.held_out``).
"""

from __future__ import annotations

from collections.abc import Callable

from cdkd_bench import DataContext, Domain, DomainFiles, RegisterDomains, RegisterSuites, Suite, hookimpl

from .image_layouts import SUITE_SETTINGS, data_root, held_out_split, read_image_list, require_file, require_folder

VISDA_HOMEPAGE = "https://ai.bu.edu/visda-2017/"
VISDA_CLASSES = (
    "aeroplane", "bicycle", "bus", "car", "horse", "knife", "motorcycle", "person", "plant", "skateboard", "train", "truck",
)
LIST_NAME = "image_list.txt"
# name, folder below <data_root>/visda2017, images, description
VISDA_DOMAINS = (
    ("synthetic", "train", 152_397, "renderings of 3D CAD models from many angles and lightings"),
    ("real", "validation", 55_388, "photographs cropped from MS COCO"),
)


def _list_locator(domain: str, split: str) -> Callable[[DataContext], DomainFiles]:
    def locate(context: DataContext) -> DomainFiles:
        root = data_root(context, domain, f"VisDA-2017 (<data root>/visda2017/{split}/{LIST_NAME} and the images it names)")
        folder = root / "visda2017" / split
        layout = f"{folder}/{LIST_NAME} naming images {folder}/<class>/<file>"
        look_for = [(root / split, folder), (root / "visda2017" / "classification" / split, folder)]
        require_folder(folder, domain, layout, "VisDA-2017", VISDA_HOMEPAGE, look_for)
        list_file = folder / LIST_NAME
        require_file(list_file, domain, layout, "VisDA-2017", VISDA_HOMEPAGE)
        listed = read_image_list(list_file, folder, len(VISDA_CLASSES))
        images = sorted((image.path, image.label) for image in listed)
        train, test = held_out_split(images, root)
        return DomainFiles(sources=(list_file, *(path for path, _ in images)), train=train, test=test)

    return locate


@hookimpl
def cdkd_register_domains(register: RegisterDomains) -> None:
    for name, split, count, description in VISDA_DOMAINS:
        register(Domain(
            name=f"visda2017.{name}",
            num_classes=len(VISDA_CLASSES),
            load=None,
            locate=_list_locator(f"visda2017.{name}", split),
            expected_images=count,
            homepage=VISDA_HOMEPAGE,
            description=f"VisDA-2017 {split} ({name}): {description}; 12 classes, {count:,} images",
        ))


@hookimpl
def cdkd_register_suites(register: RegisterSuites) -> None:
    register(Suite(
        headline="balanced_acc",  # VisDA-2017 reports the mean of the per-class accuracies
        name="visda2017",
        domains=("visda2017.synthetic", "visda2017.real"),
        num_classes=len(VISDA_CLASSES),
        pairs=(("visda2017.synthetic", "visda2017.real"),),
        transductive_targets=("visda2017.synthetic", "visda2017.real"),
        description="VisDA-2017 classification: synthetic renderings to real photos of 12 classes; "
                    "files under <data root>/visda2017",
        **SUITE_SETTINGS,
    ))
