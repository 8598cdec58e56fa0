"""The Office-31 and Office-Home suites: photographs of office objects, read from class folders under the data root.

Layouts (``<data_root>`` is ``--data-root`` or ``CDKD_BENCH_DATA``)::

    <data_root>/office31/{amazon,dslr,webcam}/images/<class>/*.jpg
    <data_root>/officehome/{Art,Clipart,Product,Real_World}/<class>/*.jpg

Neither dataset has an official split, and both are scored by the transductive protocol (every
image of the target is unlabelled training data and test data). For ``target_oracle`` one image
in five, chosen by the CRC-32 of its path, is held out as test (``image_layouts.held_out``).
Class indices follow the class lists below (TLlib's), not the order of the folders on disk.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cdkd_bench import DataContext, Domain, DomainFiles, PublishedResult, RegisterDomains, RegisterSuites, Suite, hookimpl

from .image_layouts import SUITE_SETTINGS, data_root, held_out_split, list_class_folders, require_folder

OFFICE31_HOMEPAGE = "https://faculty.cc.gatech.edu/~judy/domainadapt/"
OFFICEHOME_HOMEPAGE = "https://www.hemanthdv.org/officeHomeDataset.html"

OFFICE31_CLASSES = (
    "back_pack", "bike", "bike_helmet", "bookcase", "bottle", "calculator", "desk_chair", "desk_lamp",
    "desktop_computer", "file_cabinet", "headphones", "keyboard", "laptop_computer", "letter_tray",
    "mobile_phone", "monitor", "mouse", "mug", "paper_notebook", "pen", "phone", "printer", "projector",
    "punchers", "ring_binder", "ruler", "scissors", "speaker", "stapler", "tape_dispenser", "trash_can",
)
# In TLlib's order (the labels of its image lists), which is not alphabetical.
OFFICEHOME_CLASSES = (
    "Drill", "Exit_Sign", "Bottle", "Glasses", "Computer", "File_Cabinet", "Shelf", "Toys", "Sink",
    "Laptop", "Kettle", "Folder", "Keyboard", "Flipflops", "Pencil", "Bed", "Hammer", "ToothBrush", "Couch",
    "Bike", "Postit_Notes", "Mug", "Webcam", "Desk_Lamp", "Telephone", "Helmet", "Mouse", "Pen", "Monitor",
    "Mop", "Sneakers", "Notebook", "Backpack", "Alarm_Clock", "Push_Pin", "Paper_Clip", "Batteries", "Radio",
    "Fan", "Ruler", "Pan", "Screwdriver", "Trash_Can", "Printer", "Speaker", "Eraser", "Bucket", "Chair",
    "Calendar", "Calculator", "Flowers", "Lamp_Shade", "Spoon", "Candles", "Clipboards", "Scissors", "TV",
    "Curtains", "Fork", "Soda", "Table", "Knives", "Oven", "Refrigerator", "Marker",
)

# name (the folder below <data_root>/office31), images, description
OFFICE31_DOMAINS = (
    ("amazon", 2817, "product photos from amazon.com on white backgrounds"),
    ("dslr", 498, "high-resolution photos taken with a digital SLR camera in an office"),
    ("webcam", 795, "low-resolution, noisy photos taken with a webcam in an office"),
)
# name, folder below <data_root>/officehome, images, description
OFFICEHOME_DOMAINS = (
    ("art", "Art", 2427, "paintings, sketches and other artistic depictions"),
    ("clipart", "Clipart", 4365, "clipart images"),
    ("product", "Product", 4439, "product photos without background"),
    ("real_world", "Real_World", 4357, "photos taken with a regular camera"),
)
# Office-Home's archive unpacks to this folder, with "Real World" spelled with a space.
OFFICEHOME_ARCHIVE_FOLDER = "OfficeHomeDataset_10072016"


def _folder_locator(domain: str, dataset: str, homepage: str, relative: str, classes: tuple[str, ...],
                    look_for: Callable[[Path], list[tuple[Path, Path]]]) -> Callable[[DataContext], DomainFiles]:
    """``locate`` for a domain stored as ``<data_root>/<relative>/<class>/*.jpg``, split by path checksum."""

    def locate(context: DataContext) -> DomainFiles:
        root = data_root(context, domain, f"{dataset} (<data root>/{relative}/<class>/*.jpg)")
        folder = root / relative
        require_folder(folder, domain, f"{folder}/<class>/*.jpg", dataset, homepage, look_for(root))
        images = list_class_folders(folder, classes)
        train, test = held_out_split(images, root)
        return DomainFiles(sources=tuple(path for path, _ in images), train=train, test=test)

    return locate


def _office31_look_for(name: str) -> Callable[[Path], list[tuple[Path, Path]]]:
    def look_for(root: Path) -> list[tuple[Path, Path]]:
        target = root / "office31" / name
        return [(root / "office31" / "domain_adaptation_images" / name, target),
                (root / "domain_adaptation_images" / name, target),
                (root / name / "images", target)]

    return look_for


def _officehome_look_for(folder: str) -> Callable[[Path], list[tuple[Path, Path]]]:
    spellings = dict.fromkeys([folder, folder.replace("_", " ")])

    def look_for(root: Path) -> list[tuple[Path, Path]]:
        target = root / "officehome" / folder
        places = [root / "officehome", root / "officehome" / OFFICEHOME_ARCHIVE_FOLDER, root / OFFICEHOME_ARCHIVE_FOLDER, root]
        return [(place / spelling, target) for place in places for spelling in spellings if place / spelling != target]

    return look_for


def office31_domains() -> list[Domain]:
    return [
        Domain(
            name=f"office31.{name}",
            num_classes=len(OFFICE31_CLASSES),
            load=None,
            locate=_folder_locator(f"office31.{name}", "Office-31", OFFICE31_HOMEPAGE, f"office31/{name}/images",
                                   OFFICE31_CLASSES, _office31_look_for(name)),
            expected_images=count,
            homepage=OFFICE31_HOMEPAGE,
            description=f"Office-31 {name}: {description}; 31 classes, {count:,} images",
        )
        for name, count, description in OFFICE31_DOMAINS
    ]


def officehome_domains() -> list[Domain]:
    return [
        Domain(
            name=f"officehome.{name}",
            num_classes=len(OFFICEHOME_CLASSES),
            load=None,
            locate=_folder_locator(f"officehome.{name}", "Office-Home", OFFICEHOME_HOMEPAGE, f"officehome/{folder}",
                                   OFFICEHOME_CLASSES, _officehome_look_for(folder)),
            expected_images=count,
            homepage=OFFICEHOME_HOMEPAGE,
            description=f"Office-Home {folder}: {description}; 65 classes, {count:,} images",
        )
        for name, folder, count, description in OFFICEHOME_DOMAINS
    ]


# TLlib's Office-31 table (accuracy %, ResNet-50), by task in the order A→W, D→W, W→D, A→D, D→A, W→A.
TLLIB_SOURCE = "TLlib (thuml/Transfer-Learning-Library), examples/domain_adaptation/image_classification/README.md"
TLLIB_PROTOCOL = ("ResNet-50 ImageNet-pretrained, the student itself (no teacher); "
                  "checkpoint chosen on the target test set (oracle)")
TLLIB_TASKS = ("amazon_to_webcam", "dslr_to_webcam", "webcam_to_dslr", "amazon_to_dslr", "dslr_to_amazon", "webcam_to_amazon")
TLLIB_OFFICE31 = {
    "source_only": (75.8, 95.5, 99.0, 79.3, 63.6, 63.8),  # TLlib's ERM
    "dann": (91.4, 97.9, 100.0, 83.6, 73.3, 70.4),
    "dan": (84.2, 98.4, 100.0, 87.3, 66.9, 65.2),
    "cdan": (93.8, 98.5, 100.0, 89.9, 73.4, 70.4),
    "mcd": (90.4, 98.5, 100.0, 87.3, 68.3, 67.6),
    "mcc": (94.1, 98.4, 99.8, 95.6, 75.5, 74.2),
    "fixmatch": (86.4, 98.2, 100.0, 95.4, 70.0, 68.1),
}
OFFICE31_PUBLISHED = tuple(
    PublishedResult(task=task, recipe=recipe, accuracy=accuracy, source=TLLIB_SOURCE, protocol=TLLIB_PROTOCOL)
    for recipe, row in TLLIB_OFFICE31.items()
    for task, accuracy in zip(TLLIB_TASKS, row, strict=True)
)


@hookimpl
def cdkd_register_domains(register: RegisterDomains) -> None:
    for domain in office31_domains() + officehome_domains():
        register(domain)


@hookimpl
def cdkd_register_suites(register: RegisterSuites) -> None:
    office31 = tuple(f"office31.{name}" for name, _, _ in OFFICE31_DOMAINS)
    register(Suite(
        name="office31",
        domains=office31,
        num_classes=len(OFFICE31_CLASSES),
        # Too small to hold out enough test images: every target is scored on all its images (the Office protocol).
        transductive_targets=office31,
        published=OFFICE31_PUBLISHED,
        description="Office-31: 31 office objects photographed for amazon.com, with a DSLR and with a webcam; "
                    "files under <data root>/office31",
        **SUITE_SETTINGS,
    ))
    officehome = tuple(f"officehome.{name}" for name, _, _, _ in OFFICEHOME_DOMAINS)
    register(Suite(
        name="officehome",
        domains=officehome,
        num_classes=len(OFFICEHOME_CLASSES),
        transductive_targets=officehome,
        description="Office-Home: 65 everyday objects as art, clipart, product and real-world photos; "
                    "files under <data root>/officehome",
        **SUITE_SETTINGS,
    ))
