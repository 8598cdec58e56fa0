"""The digits suite: MNIST, USPS, SVHN and MNIST-M, read from their published files under the data root.

Layout (``--data-root`` or ``CDKD_BENCH_DATA``)::

    MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz   (torchvision's layout; uncompressed files also do)
    USPS/usps.bz2, USPS/usps.t.bz2
    SVHN/train_32x32.mat, SVHN/test_32x32.mat
    mnist_m/mnist_m_{train,test}/*.png, mnist_m/mnist_m_{train,test}_labels.txt   (lines `00000000.png 5`)

Protocol: every train image of the published splits trains, and a target is scored on its test split, as in TLlib.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from cdkd_bench import (
    Augmentation,
    Budget,
    DataContext,
    Domain,
    DomainFiles,
    PublishedResult,
    RegisterDomains,
    RegisterSuites,
    Suite,
    UserError,
    hookimpl,
)

if TYPE_CHECKING:
    import numpy as np

    from cdkd_bench import DomainData

MNIST_FILES = tuple(f"MNIST/raw/{split}-{kind}-ubyte.gz" for split in ("train", "t10k") for kind in ("images-idx3", "labels-idx1"))
USPS_FILES = ("USPS/usps.bz2", "USPS/usps.t.bz2")
SVHN_FILES = ("SVHN/train_32x32.mat", "SVHN/test_32x32.mat")
MNISTM_SPLITS = ("mnist_m_train", "mnist_m_test")
PREPARE = "`cdkd-bench data prepare digits` downloads them"

HOMEPAGES = {
    "mnist": "http://yann.lecun.com/exdb/mnist/",
    "usps": "https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/multiclass.html#usps",
    "svhn": "http://ufldl.stanford.edu/housenumbers/",
    "mnistm": "http://yaroslav.ganin.net/",
}


# --------------------------------------------------------------------------- finding files


def _root(context: DataContext, domain: str) -> Path:
    if context.data_root is None:
        raise UserError(f"{domain} reads its files from a data root; pass --data-root or set CDKD_BENCH_DATA")
    return Path(context.data_root)


def _missing(domain: str, root: Path, missing: list[str], layout: str, where: str) -> UserError:
    return UserError(f"{domain}: {', '.join(missing)} not found under {str(root)!r} (expected {layout}); {where}")


def _mnist_files(context: DataContext) -> list[Path]:
    root = _root(context, "digits.mnist")
    found, missing = [], []
    for name in MNIST_FILES:
        # torchvision's download leaves both the .gz and its extracted copy; either is enough.
        path = next((p for p in (root / name, root / name.removesuffix(".gz")) if p.is_file()), None)
        if path is None:
            missing.append(name)
        else:
            found.append(path)
    if missing:
        raise _missing("digits.mnist", root, missing, "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz, or the same uncompressed",
                       f"{PREPARE} from {HOMEPAGES['mnist']}")
    return found


def _fixed_files(domain: str, names: tuple[str, ...], layout: str, homepage: str) -> Callable[[DataContext], list[Path]]:
    def find(context: DataContext) -> list[Path]:
        root = _root(context, domain)
        missing = [name for name in names if not (root / name).is_file()]
        if missing:
            raise _missing(domain, root, missing, layout, f"{PREPARE} from {homepage}")
        return [root / name for name in names]

    return find


_usps_files = _fixed_files("digits.usps", USPS_FILES, "USPS/usps.bz2 and USPS/usps.t.bz2", HOMEPAGES["usps"])
_svhn_files = _fixed_files("digits.svhn", SVHN_FILES, "SVHN/train_32x32.mat and SVHN/test_32x32.mat", HOMEPAGES["svhn"])


def _mnistm_listing(context: DataContext) -> list[tuple[Path, list[Path], np.ndarray]]:
    """Each split's label list, the PNGs it names (checked to exist) and their labels."""
    from .digit_formats import read_label_list

    root = _root(context, "digits.mnistm")
    wanted = [name for split in MNISTM_SPLITS for name in (f"mnist_m/{split}_labels.txt", f"mnist_m/{split}/")]
    missing = [name for name in wanted if not (root / name).exists()]
    if missing:
        raise _missing("digits.mnistm", root, missing, "mnist_m/mnist_m_{train,test}/*.png with mnist_m/mnist_m_{train,test}_labels.txt",
                       f"MNIST-M has no stable download: unpack mnist_m.tar.gz (linked from {HOMEPAGES['mnistm']}) into the data root")
    splits = []
    for split in MNISTM_SPLITS:
        labels = root / "mnist_m" / f"{split}_labels.txt"
        splits.append((labels, *read_label_list(labels, root / "mnist_m" / split)))
    return splits


# --------------------------------------------------------------------------- locate and load


def _locate(find: Callable[[DataContext], list[Path]]) -> Callable[[DataContext], DomainFiles]:
    return lambda context: DomainFiles(sources=tuple(find(context)))


def _locate_mnistm(context: DataContext) -> DomainFiles:
    return DomainFiles(sources=tuple(path for labels, pngs, _ in _mnistm_listing(context) for path in (labels, *pngs)))


def _domain_data(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]) -> DomainData:
    # Imported here: listing suites must not import torch.
    import torch

    from cdkd_bench.api import DomainData

    return DomainData(*(torch.from_numpy(array) for array in (*train, *test)))


def _load_mnist(context: DataContext) -> DomainData:
    from .digit_formats import read_mnist

    train_x, train_y, test_x, test_y = _mnist_files(context)
    return _domain_data(read_mnist(train_x, train_y), read_mnist(test_x, test_y))


def _load_usps(context: DataContext) -> DomainData:
    from .digit_formats import read_usps

    return _domain_data(*(read_usps(path) for path in _usps_files(context)))


def _load_svhn(context: DataContext) -> DomainData:
    from .digit_formats import read_svhn

    return _domain_data(*(read_svhn(path) for path in _svhn_files(context)))


def _load_mnistm(context: DataContext) -> DomainData:
    from .digit_formats import read_pngs

    return _domain_data(*((read_pngs(pngs), labels) for _, pngs, labels in _mnistm_listing(context)))


# --------------------------------------------------------------------------- checksums and downloads


class _TorchvisionChecksums(Mapping[str, str]):
    """MD5s read from torchvision's dataset classes on first use: importing torchvision imports torch,
    which commands that only list suites must not pay for."""

    def __init__(self, read: Callable[[], dict[str, str]]) -> None:
        self._read = read

    @cached_property
    def _table(self) -> dict[str, str]:
        return self._read()

    def __getitem__(self, key: str) -> str:
        return self._table[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)


def _mnist_md5() -> dict[str, str]:
    from torchvision.datasets import MNIST

    return {f"MNIST/raw/{name}": md5 for name, md5 in MNIST.resources}


def _usps_md5() -> dict[str, str]:
    from torchvision.datasets import USPS

    return {f"USPS/{USPS.split_list[split][1]}": USPS.split_list[split][2] for split in ("train", "test")}


def _svhn_md5() -> dict[str, str]:
    from torchvision.datasets import SVHN

    return {f"SVHN/{SVHN.split_list[split][1]}": SVHN.split_list[split][2] for split in ("train", "test")}


def _fetch(urls: list[str], folder: Path, filename: str, md5: str) -> None:
    """One file from the first URL that serves it with the right MD5 (torchvision skips a file already verified)."""
    from torchvision.datasets.utils import download_url

    errors = []
    for url in urls:
        try:
            download_url(url, str(folder), filename, md5)
            return
        except (OSError, RuntimeError) as exc:  # URLError is an OSError; a wrong checksum a RuntimeError
            errors.append(f"{url}: {exc}")
    raise UserError(f"could not download {filename} into {str(folder)!r} ({'; '.join(errors)})")


def _download_mnist(context: DataContext) -> None:
    from torchvision.datasets import MNIST

    folder = _root(context, "digits.mnist") / "MNIST" / "raw"
    for filename, md5 in MNIST.resources:
        _fetch([mirror + filename for mirror in MNIST.mirrors], folder, filename, md5)


def _download_split_list(domain: str, folder_name: str, dataset: str) -> Callable[[DataContext], None]:
    def download(context: DataContext) -> None:
        import torchvision.datasets

        folder = _root(context, domain) / folder_name
        for split in ("train", "test"):
            url, filename, md5 = getattr(torchvision.datasets, dataset).split_list[split]
            _fetch([url], folder, filename, md5)

    return download


# --------------------------------------------------------------------------- registration

# Small geometric jitter and contrast changes; never flips or inversions, which change what a digit is
# (a mirrored 2, a 6 turned 9) or undo the polarity the domains differ in.
STRONG = Augmentation(rotation_degrees=10, scale=(0.9, 1.1), translate=0.08, gain=(0.8, 1.2), bias=0.15)
WEAK = Augmentation(scale=(0.95, 1.05), translate=0.06)

TLLIB = "TLlib docs/dalib/benchmarks/image_classification.rst at commit 4636534"
TLLIB_PROTOCOL = ("LeNet 28px (M↔U) / DTN 32px (S→M) from scratch, 2,500 iterations × batch 128; "
                  "checkpoint chosen on the target test set (oracle)")
# Accuracy (%) on the target test split: svhn_to_mnist, mnist_to_usps, usps_to_mnist.
TLLIB_DIGITS = {
    "source_only": (74.1, 82.1, 74.6),
    "dann": (90.8, 91.7, 95.2),
    "dan": (82.1, 86.0, 89.5),
    "cdan": (93.8, 96.0, 97.7),
    "mcd": (90.6, 94.1, 97.6),
    "mcc": (76.6, 95.1, 94.6),
}
PUBLISHED = tuple(
    PublishedResult(task, recipe, accuracy, TLLIB, TLLIB_PROTOCOL)
    for recipe, row in TLLIB_DIGITS.items()
    for task, accuracy in zip(("svhn_to_mnist", "mnist_to_usps", "usps_to_mnist"), row, strict=True)
)


@hookimpl
def cdkd_register_domains(register: RegisterDomains) -> None:
    register(Domain(
        "digits.mnist", 10, _load_mnist, description="MNIST: 28x28 handwritten digits, white on black (60,000 train / 10,000 test)",
        locate=_locate(_mnist_files), expected_images=70_000, checksums=_TorchvisionChecksums(_mnist_md5),
        download=_download_mnist, homepage=HOMEPAGES["mnist"],
    ))
    register(Domain(
        "digits.usps", 10, _load_usps, description="USPS: 16x16 scanned postal-code digits (7,291 train / 2,007 test)",
        locate=_locate(_usps_files), expected_images=9_298, checksums=_TorchvisionChecksums(_usps_md5),
        download=_download_split_list("digits.usps", "USPS", "USPS"), homepage=HOMEPAGES["usps"],
    ))
    register(Domain(
        "digits.svhn", 10, _load_svhn, description="SVHN: 32x32 colour crops of house numbers (73,257 train / 26,032 test)",
        locate=_locate(_svhn_files), expected_images=99_289, checksums=_TorchvisionChecksums(_svhn_md5),
        download=_download_split_list("digits.svhn", "SVHN", "SVHN"), homepage=HOMEPAGES["svhn"],
    ))
    register(Domain(
        "digits.mnistm", 10, _load_mnistm,
        description="MNIST-M: MNIST digits blended with colour photo patches, 28x28 (59,001 train / 9,001 test)",
        locate=_locate_mnistm, expected_images=68_002, download=None, homepage=HOMEPAGES["mnistm"],
    ))


@hookimpl
def cdkd_register_suites(register: RegisterSuites) -> None:
    register(Suite(
        name="digits",
        domains=("digits.mnist", "digits.usps", "digits.svhn", "digits.mnistm"),
        pairs=(
            ("digits.mnist", "digits.usps"),
            ("digits.usps", "digits.mnist"),
            ("digits.svhn", "digits.mnist"),
            ("digits.mnist", "digits.mnistm"),
        ),
        num_classes=10,
        image_size=32,
        budgets={
            # `smoke` only checks that everything runs (tests on tiny files); its numbers mean nothing.
            "smoke": Budget(teacher_steps=4, student_steps=2, batch_size=8, lr=1e-2, eval_points=1),
            "quick": Budget(teacher_steps=400, student_steps=200, batch_size=64, lr=1e-2, eval_points=3),
            "default": Budget(teacher_steps=1000, student_steps=1000, batch_size=128, lr=1e-2, eval_points=5),
            # TLlib's digits schedule: 2,500 iterations of batch 128, for teacher and student alike.
            "paper": Budget(teacher_steps=2500, student_steps=2500, batch_size=128, lr=1e-2, eval_points=10),
        },
        default_teacher="resnet18_w16_32px",
        default_student="resnet10_w8_32px",
        default_recipes=("source_only", "kd", "target_oracle"),
        default_seeds=(0, 1),
        default_budget="quick",
        teacher_augmentation=STRONG,
        views={"weak": WEAK, "strong": STRONG},
        published=PUBLISHED,
        default=False,
        description="real digits: MNIST, USPS, SVHN and MNIST-M from their published files (needs --data-root)",
    ))
