"""The digits suite reads the published file formats exactly, and names the file in every error."""

from __future__ import annotations

import bz2
import gzip
import importlib.metadata
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from digit_files import WRITERS, idx_bytes, usps_lines, write_digits_root, write_mnist, write_mnistm, write_svhn, write_usps

from cdkd_bench import DataContext, Domain, Suite, UserError
from cdkd_plugins.domains import digits

DOMAINS: dict[str, Domain] = {}
digits.cdkd_register_domains(lambda domain: DOMAINS.__setitem__(domain.name, domain))
SUITES: list[Suite] = []
digits.cdkd_register_suites(SUITES.append)


def context(root: Path | None) -> DataContext:
    return DataContext(root, Path("unused-cache"))


def load(name: str, root: Path | None):  # type: ignore[no-untyped-def]
    domain = DOMAINS[name]
    assert domain.locate is not None and domain.load is not None
    return domain.load(context(root))


def assert_decoded(data, expected) -> None:  # type: ignore[no-untyped-def]
    for field, want in zip(("train_x", "train_y", "test_x", "test_y"), expected, strict=True):
        got = getattr(data, field).numpy()
        assert got.dtype == want.dtype and got.shape == want.shape, field
        np.testing.assert_array_equal(got, want, err_msg=field)


def error(name: str, root: Path | None) -> str:
    with pytest.raises(UserError) as caught:
        load(name, root)
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message
    return message


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("name", list(WRITERS))
def test_each_domain_decodes_exactly_what_was_written(tmp_path: Path, name: str) -> None:
    expected = WRITERS[name](tmp_path, 12, 6)
    assert_decoded(load(name, tmp_path), expected)
    assert all(path.is_file() and tmp_path in path.parents for path in DOMAINS[name].locate(context(tmp_path)).sources)


def test_the_label_and_value_mappings_are_the_published_ones(tmp_path: Path) -> None:
    usps = tmp_path / "USPS"
    usps.mkdir()
    values = np.array([[-1.0] * 254 + [0.0, 1.0], [0.5] * 256])
    (usps / "usps.bz2").write_bytes(bz2.compress(usps_lines(values, np.array([9, 0]))))  # written as 10 and 1
    (usps / "usps.t.bz2").write_bytes(bz2.compress(usps_lines(values[:1], np.array([4]))))
    data = load("digits.usps", tmp_path)
    assert data.train_y.tolist() == [9, 0] and data.test_y.tolist() == [4]
    assert data.train_x.shape == (2, 1, 16, 16)
    assert data.train_x[0].flatten()[-3:].tolist() == [0, 127, 255] and set(data.train_x[1].flatten().tolist()) == {191}

    svhn = tmp_path / "SVHN"
    svhn.mkdir()
    image = np.zeros((32, 32, 3, 2), np.uint8)
    image[1, 2, 0, 1] = 200  # row 1, column 2, red, second image
    for name in ("train_32x32.mat", "test_32x32.mat"):
        scipy.io.savemat(svhn / name, {"X": image, "y": np.array([[10], [3]], np.uint8)})
    data = load("digits.svhn", tmp_path)
    assert data.train_y.tolist() == [0, 3] and data.train_x.shape == (2, 3, 32, 32)
    assert data.train_x[1, 0, 1, 2] == 200 and int(data.train_x.sum()) == 200


def test_uncompressed_mnist_files_are_accepted(tmp_path: Path) -> None:
    expected = write_mnist(tmp_path, 5, 3, compress=False)
    assert_decoded(load("digits.mnist", tmp_path), expected)
    assert not any(path.suffix == ".gz" for path in DOMAINS["digits.mnist"].locate(context(tmp_path)).sources)


def test_mnistm_sources_are_the_label_lists_and_every_png(tmp_path: Path) -> None:
    write_mnistm(tmp_path, 4, 2)
    sources = DOMAINS["digits.mnistm"].locate(context(tmp_path)).sources
    assert len(sources) == 2 + 4 + 2
    assert sources[0] == tmp_path / "mnist_m" / "mnist_m_train_labels.txt"
    assert sources[1] == tmp_path / "mnist_m" / "mnist_m_train" / "00000000.png"


def test_a_whole_tiny_root_loads(tmp_path: Path) -> None:
    write_digits_root(tmp_path, 3, 2)
    for name in DOMAINS:
        data = load(name, tmp_path)
        assert (len(data.train_y), len(data.test_y)) == (3, 2)


# --------------------------------------------------------------------------- declarations


def test_the_suite_is_declared_as_the_brief_says() -> None:
    (suite,) = SUITES
    assert suite.name == "digits" and not suite.default and not suite.transductive_targets
    assert [task.name for task in suite.tasks] == [
        "digits.mnist_to_usps", "digits.usps_to_mnist", "digits.svhn_to_mnist", "digits.mnist_to_mnistm"]
    assert set(suite.domains) == set(DOMAINS)
    assert suite.teacher_augmentation is not None and suite.teacher_augmentation.invert_probability == 0
    assert suite.teacher_augmentation.hflip_probability == 0
    short = {task.name.removeprefix("digits.") for task in suite.tasks}
    assert {result.task for result in suite.published} <= short and len(suite.published) == 18
    cdan = [r.accuracy for r in suite.published if r.recipe == "cdan"]
    assert cdan == [93.8, 96.0, 97.7]
    assert [ep.value for ep in importlib.metadata.entry_points(group="cdkd_bench") if ep.name == "digits"] == [
        "cdkd_plugins.domains.digits"]


def test_domains_declare_counts_checksums_and_downloads() -> None:
    from torchvision.datasets import MNIST, SVHN, USPS

    counts = {name: domain.expected_images for name, domain in DOMAINS.items()}
    assert counts == {"digits.mnist": 70_000, "digits.usps": 9_298, "digits.svhn": 99_289, "digits.mnistm": 68_002}
    assert dict(DOMAINS["digits.mnist"].checksums) == {f"MNIST/raw/{name}": md5 for name, md5 in MNIST.resources}
    assert dict(DOMAINS["digits.usps"].checksums) == {
        "USPS/usps.bz2": USPS.split_list["train"][2], "USPS/usps.t.bz2": USPS.split_list["test"][2]}
    assert dict(DOMAINS["digits.svhn"].checksums) == {
        "SVHN/train_32x32.mat": SVHN.split_list["train"][2], "SVHN/test_32x32.mat": SVHN.split_list["test"][2]}
    assert DOMAINS["digits.mnistm"].download is None and not DOMAINS["digits.mnistm"].checksums
    assert all(domain.homepage and domain.num_classes == 10 for domain in DOMAINS.values())


def test_importing_the_plugin_does_not_import_torch() -> None:
    probe = "import sys, cdkd_plugins.domains.digits; print(sorted(m for m in ('torch', 'torchvision', 'scipy') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip() == "[]"


# --------------------------------------------------------------------------- errors


def test_no_data_root(tmp_path: Path) -> None:
    for name, domain in DOMAINS.items():
        with pytest.raises(UserError, match="--data-root or set CDKD_BENCH_DATA"):
            domain.locate(context(None))
        assert name in error(name, None)


def test_missing_files_are_each_named_with_the_layout_and_where_to_get_them(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    (tmp_path / "MNIST/raw/train-labels-idx1-ubyte.gz").unlink()
    (tmp_path / "MNIST/raw/t10k-images-idx3-ubyte.gz").unlink()
    message = error("digits.mnist", tmp_path)
    assert "MNIST/raw/train-labels-idx1-ubyte.gz" in message and "MNIST/raw/t10k-images-idx3-ubyte.gz" in message
    assert "train-images" not in message.split("(expected")[0]
    assert "cdkd-bench data prepare digits" in message and "yann.lecun.com" in message

    message = error("digits.usps", tmp_path)
    assert "USPS/usps.bz2" in message and "USPS/usps.t.bz2" in message and "data prepare digits" in message
    message = error("digits.mnistm", tmp_path)
    assert "mnist_m/mnist_m_train_labels.txt" in message and "no stable download" in message


def _one_mnist_file(root: Path, name: str, data: bytes) -> Path:
    write_mnist(root)
    path = root / "MNIST" / "raw" / name
    path.write_bytes(data)
    return path


def test_bad_idx_magic(tmp_path: Path) -> None:
    path = _one_mnist_file(tmp_path, "train-images-idx3-ubyte.gz", gzip.compress(idx_bytes(np.zeros((12, 28, 28)), 2049)))
    message = error("digits.mnist", tmp_path)
    assert str(path) in message and "magic number is 2049, expected 2051" in message


def test_truncated_gzip(tmp_path: Path) -> None:
    path = tmp_path / "MNIST/raw/t10k-labels-idx1-ubyte.gz"
    write_mnist(tmp_path)
    path.write_bytes(path.read_bytes()[:-12])
    message = error("digits.mnist", tmp_path)
    assert str(path) in message and "gz" in message


def test_idx_shorter_than_its_header_says(tmp_path: Path) -> None:
    data = idx_bytes(np.zeros((12, 28, 28)), 2051)[:-5]
    path = _one_mnist_file(tmp_path, "train-images-idx3-ubyte.gz", gzip.compress(data))
    message = error("digits.mnist", tmp_path)
    assert str(path) in message and "header describes 12 x 28 x 28" in message


def test_image_and_label_counts_differ(tmp_path: Path) -> None:
    path = _one_mnist_file(tmp_path, "train-labels-idx1-ubyte.gz", gzip.compress(idx_bytes(np.zeros(11), 2049)))
    message = error("digits.mnist", tmp_path)
    assert str(path) in message and "12 images" in message and "11 labels" in message


def test_label_out_of_range(tmp_path: Path) -> None:
    path = _one_mnist_file(tmp_path, "t10k-labels-idx1-ubyte.gz", gzip.compress(idx_bytes(np.full(6, 10), 2049)))
    message = error("digits.mnist", tmp_path)
    assert str(path) in message and "label 10, outside 0-9" in message

    write_usps(tmp_path)
    usps = tmp_path / "USPS/usps.t.bz2"
    usps.write_bytes(bz2.compress(b"11 1:0.5\n"))
    message = error("digits.usps", tmp_path)
    assert str(usps) in message and "label 11, outside 1-10" in message


def test_corrupt_bz2_and_bad_libsvm_line(tmp_path: Path) -> None:
    write_usps(tmp_path)
    path = tmp_path / "USPS/usps.bz2"
    path.write_bytes(path.read_bytes()[:40])
    assert str(path) in error("digits.usps", tmp_path)
    path.write_bytes(bz2.compress(b"3 1:0.5 2:oops\n"))
    message = error("digits.usps", tmp_path)
    assert str(path) in message and "line 1" in message


def test_a_mat_file_that_is_not_one(tmp_path: Path) -> None:
    write_svhn(tmp_path)
    path = tmp_path / "SVHN/test_32x32.mat"
    path.write_bytes(b"<html>not found</html>" * 20)
    message = error("digits.svhn", tmp_path)
    assert str(path) in message and "MATLAB" in message
    scipy.io.savemat(path, {"X": np.zeros((32, 32, 3, 1), np.uint8)})
    message = error("digits.svhn", tmp_path)
    assert str(path) in message and "lacks the variable y" in message


def test_label_list_naming_a_missing_png(tmp_path: Path) -> None:
    write_mnistm(tmp_path)
    (tmp_path / "mnist_m/mnist_m_test/00000003.png").unlink()
    for call in (DOMAINS["digits.mnistm"].locate, DOMAINS["digits.mnistm"].load):
        with pytest.raises(UserError) as caught:
            call(context(tmp_path))
        assert "mnist_m_test_labels.txt" in str(caught.value) and "'00000003.png'" in str(caught.value)


def test_an_unreadable_png(tmp_path: Path) -> None:
    write_mnistm(tmp_path)
    path = tmp_path / "mnist_m/mnist_m_train/00000005.png"
    path.write_bytes(path.read_bytes()[:30])
    message = error("digits.mnistm", tmp_path)
    assert str(path) in message and "not a readable image" in message


@pytest.fixture
def published(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """A local HTTP server publishing tiny digit files, with torchvision's URL and MD5 tables pointed at it.

    The downloads are real (torchvision's ``download_url`` over HTTP, MD5 verified); only
    the place they come from and the checksums they must have are the test's.
    """
    import functools
    import hashlib
    import http.server
    import threading

    import torchvision.datasets as tv

    served = tmp_path / "served"
    write_mnist(served / "mnist")
    write_usps(served / "usps")
    write_svhn(served / "svhn")
    files = {
        "mnist": sorted((served / "mnist" / "MNIST" / "raw").iterdir()),
        "usps": [served / "usps" / "USPS" / name for name in ("usps.bz2", "usps.t.bz2")],
        "svhn": [served / "svhn" / "SVHN" / name for name in ("train_32x32.mat", "test_32x32.mat")],
    }
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"

    def md5(path: Path) -> str:
        return hashlib.md5(path.read_bytes()).hexdigest()

    def url(path: Path) -> str:
        return f"{base}/{path.relative_to(served).as_posix()}"

    # The first mirror answers 404, as a dead mirror does: the next one is tried.
    monkeypatch.setattr(tv.MNIST, "mirrors", [f"{base}/gone/", f"{base}/mnist/MNIST/raw/"])
    monkeypatch.setattr(tv.MNIST, "resources", [(p.name, md5(p)) for p in files["mnist"]])
    monkeypatch.setattr(tv.USPS, "split_list", {s: (url(p), p.name, md5(p)) for s, p in zip(("train", "test"), files["usps"], strict=True)})
    monkeypatch.setattr(tv.SVHN, "split_list", {s: (url(p), p.name, md5(p)) for s, p in zip(("train", "test"), files["svhn"], strict=True)})
    yield files
    server.shutdown()


def test_downloads_land_in_the_layout_verified_against_the_published_checksums(tmp_path: Path, published) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "data"
    for name in ("digits.mnist", "digits.usps", "digits.svhn"):
        DOMAINS[name].download(context(root))
        files = DOMAINS[name].locate(context(root)).sources
        assert files and all(f.is_file() for f in files)
        assert DOMAINS[name].load(context(root)).train_x.shape[0] == 12  # what was published, decoded
    landed = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert landed == sorted(f"MNIST/raw/{p.name}" for p in published["mnist"]) + ["SVHN/test_32x32.mat", "SVHN/train_32x32.mat",
                                                                                   "USPS/usps.bz2", "USPS/usps.t.bz2"]


def test_a_download_with_the_wrong_checksum_is_refused_and_named(tmp_path: Path, published, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import torchvision.datasets as tv

    train = tv.USPS.split_list["train"]
    monkeypatch.setattr(tv.USPS, "split_list", {**tv.USPS.split_list, "train": (train[0], train[1], "0" * 32)})
    with pytest.raises(UserError, match="could not download usps.bz2 "):
        DOMAINS["digits.usps"].download(context(tmp_path / "data"))


def test_data_prepare_downloads_what_is_published_and_names_what_must_be_fetched_by_hand(  # type: ignore[no-untyped-def]
        tmp_path: Path, published, capsys) -> None:
    from cdkd_bench.cli import main

    root = tmp_path / "data"
    assert main(["data", "prepare", "digits", "--data-root", str(root), "--cache-dir", str(tmp_path / "cache")]) == 2
    out, err = capsys.readouterr()
    assert out.splitlines() == ["digits.mnist: ready", "digits.usps: ready", "digits.svhn: ready"]
    errors = [line for line in err.splitlines() if line.startswith("cdkd-bench: error:")]  # the rest: download progress bars
    assert len(errors) == 1 and "MNIST-M has no stable download" in errors[0]
    write_mnistm(root)
    assert main(["data", "prepare", "digits", "--data-root", str(root), "--cache-dir", str(tmp_path / "cache")]) == 0
