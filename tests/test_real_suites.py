"""The real suites end to end on tiny files in their published formats: `data list / check / prepare`, the
decoded-image cache, a tiny grid per suite, and what a damaged or incomplete data root gets."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest
import torch
from digit_files import write_digits_root
from folder_files import write_domainnet_root, write_office31_root, write_officehome_root, write_visda_root

from cdkd_bench.cli import main
from cdkd_bench.data import load_domain

# A small-input ResNet the CPU trains quickly at 224 px (the 8-channel one trips a crash in torch's CPU backward there).
TINY_ARCH = "resnet10_w16_32px"


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    return tmp_path / "data"


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _weights(host, tmp_path: Path, num_classes: int) -> Path:  # type: ignore[no-untyped-def]
    """A weights file for the tiny architecture: the Office-like suites start from pretrained weights."""
    path = tmp_path / f"{TINY_ARCH}-{num_classes}.pth"
    torch.manual_seed(0)
    torch.save(host.architecture(TINY_ARCH, num_classes).state_dict(), path)
    return path


def _grid(data_root: Path, tmp_path: Path, suite: str, task: str, *extra: str) -> int:
    return main(["run", "--suite", suite, "--tasks", task, "--budget", "smoke", "--seeds", "0", "--recipes", "kd",
                 "--teacher", TINY_ARCH, "--student", TINY_ARCH, "--data-root", str(data_root),
                 "--store", str(tmp_path / "store.sqlite"), "--out-dir", str(tmp_path / "out"), "--no-progress", *extra])


def _done(store: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(store) as db:
        return sorted(db.execute("select json_extract(spec, '$.recipe'), status from runs").fetchall())


# --------------------------------------------------------------------------- data commands


def test_data_list_says_which_domains_are_found_cached_missing_or_generated(data_root, capsys) -> None:
    write_office31_root(data_root, per_class=3)
    assert main(["data", "list", "--data-root", str(data_root)]) == 0
    rows = {line.split()[1]: line.split()[2:5] for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows["office31.amazon"] == ["found", "93", "2,817"]
    assert rows["officehome.art"][0] == "missing"
    assert rows["embedded.printed"][0] == "generated"
    assert main(["data", "prepare", "office31", "--data-root", str(data_root)]) == 0
    assert main(["data", "list", "--suite", "office31", "--data-root", str(data_root)]) == 0
    rows = {line.split()[1]: line.split()[2:4] for line in capsys.readouterr().out.splitlines() if line.startswith("office31 ")}
    assert rows == {f"office31.{d}": ["cached", "93"] for d in ("amazon", "dslr", "webcam")}


@pytest.mark.parametrize("suite, write", [
    ("office31", write_office31_root), ("officehome", write_officehome_root), ("visda2017", write_visda_root),
    ("domainnet", lambda root: write_domainnet_root(root, classes=range(4))),
])
def test_data_check_decodes_every_image_of_each_folder_suite(suite, write, data_root, capsys) -> None:
    write(data_root)
    assert main(["data", "check", suite, "--data-root", str(data_root)]) == 0
    assert "problem" not in capsys.readouterr().out
    assert main(["data", "check", suite, "--data-root", str(data_root)]) == 0  # cached now: re-hashed against its manifest


def test_data_check_reports_files_that_are_not_the_published_ones(data_root, capsys) -> None:
    write_digits_root(data_root)
    assert main(["data", "check", "digits", "--data-root", str(data_root)]) == 2
    err = capsys.readouterr().err
    assert f"{str(data_root / 'MNIST/raw/train-images-idx3-ubyte.gz')!r} has MD5 " in err
    assert "not the published" in err and "3 of 4 domains of digits have problems" in err  # MNIST-M publishes no checksums


def test_data_check_passes_digits_whose_files_match_their_checksums(data_root, capsys, monkeypatch) -> None:
    import torchvision.datasets as tv

    write_digits_root(data_root)
    # The published MD5s are read from torchvision's dataset classes: point them at the tiny files.
    monkeypatch.setattr(tv.MNIST, "resources", [(p.name, _md5(p)) for p in sorted((data_root / "MNIST/raw").iterdir())])
    monkeypatch.setattr(tv.USPS, "split_list", {s: ("", f, _md5(data_root / "USPS" / f)) for s, f in
                                                (("train", "usps.bz2"), ("test", "usps.t.bz2"))})
    monkeypatch.setattr(tv.SVHN, "split_list", {s: ("", f, _md5(data_root / "SVHN" / f)) for s, f in
                                                (("train", "train_32x32.mat"), ("test", "test_32x32.mat"))})
    assert main(["data", "check", "digits", "--data-root", str(data_root)]) == 0, capsys.readouterr().err


# --------------------------------------------------------------------------- the cache


def test_the_cache_is_built_once_and_rebuilt_when_a_source_file_changes_or_is_added(host, data_root, cache_dir) -> None:
    write_office31_root(data_root, per_class=2)
    domain = host.domains.get("office31.dslr")
    first = load_domain(domain, 256, cache_dir, data_root)
    assert first.train_x.dtype == torch.uint8 and first.train_x.shape[1:] == (3, 256, 256)
    assert len(first.train_y) + len(first.test_y) == 62
    folders = sorted((cache_dir / "data").glob("office31.dslr-*px-*[!k]"))
    assert len(folders) == 1 and (folders[0] / "manifest.json").is_file()
    again = load_domain(domain, 256, cache_dir, data_root)
    assert torch.equal(again.train_x, first.train_x)
    assert sorted((cache_dir / "data").glob("office31.dslr-*px-*[!k]")) == folders  # read, not rebuilt
    extra = data_root / "office31/dslr/images/mug/extra.jpg"
    extra.write_bytes((data_root / "office31/dslr/images/mug").iterdir().__next__().read_bytes())
    grown = load_domain(domain, 256, cache_dir, data_root)
    assert len(grown.train_y) + len(grown.test_y) == 63
    now = sorted((cache_dir / "data").glob("office31.dslr-*px-*[!k]"))
    assert len(now) == 1 and now != folders  # the stale cache is gone


def test_a_partly_written_cache_is_never_taken_as_good(host, data_root, cache_dir) -> None:
    write_office31_root(data_root, per_class=2)
    domain = host.domains.get("office31.webcam")
    good = load_domain(domain, 256, cache_dir, data_root)
    folder = next(p for p in (cache_dir / "data").iterdir() if p.is_dir() and p.name.startswith("office31.webcam"))
    manifest = json.loads((folder / "manifest.json").read_text())
    # A decode killed before its manifest was written: the folder holds arrays but no manifest.
    (folder / "manifest.json").unlink()
    rebuilt = load_domain(domain, 256, cache_dir, data_root)
    assert torch.equal(rebuilt.train_x, good.train_x)
    assert json.loads((folder / "manifest.json").read_text()) == manifest
    # A truncated image array under an intact manifest.
    images = folder / "images.npy"
    images.write_bytes(images.read_bytes()[: images.stat().st_size // 2])
    assert torch.equal(load_domain(domain, 256, cache_dir, data_root).train_x, good.train_x)
    # A temporary folder left by a killed build is swept by the next build.
    leftover = folder.parent / f".{folder.name}.999999.tmp"
    leftover.mkdir()
    (folder / "manifest.json").unlink()
    load_domain(domain, 256, cache_dir, data_root)
    assert not leftover.exists()


def test_an_unreadable_image_is_named_and_nothing_is_cached_or_stored(data_root, tmp_path, capsys) -> None:
    write_office31_root(data_root, per_class=3)
    broken = next((data_root / "office31/amazon/images/bike").iterdir())
    broken.write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    assert main(["data", "check", "office31", "--data-root", str(data_root)]) == 2
    assert f"image {str(broken)!r} cannot be decoded" in capsys.readouterr().err
    assert _grid(data_root, tmp_path, "office31", "amazon_to_webcam") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(broken) in err
    assert not (tmp_path / "store.sqlite").exists()


def test_a_missing_class_folder_stops_the_grid_before_anything_runs(data_root, tmp_path, capsys) -> None:
    write_office31_root(data_root, per_class=3)
    for image in (data_root / "office31/webcam/images/mug").iterdir():
        image.unlink()
    (data_root / "office31/webcam/images/mug").rmdir()
    assert _grid(data_root, tmp_path, "office31", "amazon_to_webcam") == 2
    err = capsys.readouterr().err
    assert "has no folder for class 'mug'" in err and err.count("\n") == 1
    assert not (tmp_path / "store.sqlite").exists()


def test_a_missing_data_root_is_one_sentence(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("CDKD_BENCH_DATA", raising=False)
    assert main(["data", "check", "office31"]) == 2
    assert "--data-root" in capsys.readouterr().err
    assert main(["run", "--suite", "digits", "--budget", "smoke", "--store", str(tmp_path / "s.sqlite"),
                 "--out-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "pass --data-root or set CDKD_BENCH_DATA" in err and err.count("\n") == 1


# --------------------------------------------------------------------------- tiny grids


def test_a_tiny_digits_grid_runs_on_the_published_formats(data_root, tmp_path) -> None:
    write_digits_root(data_root, train=24, test=8)
    assert _grid(data_root, tmp_path, "digits", "mnist_to_usps") == 0
    assert _done(tmp_path / "store.sqlite") == [("kd", "done"), ("source_only", "done"), ("target_oracle", "done")]
    page = (tmp_path / "out" / "digits.md").read_text()
    assert "Evaluation: on each target's test split" in page
    assert "| dann | " in page and "TLlib" in page  # the published numbers beside ours


# In the slow env: the default run must stay under 10 minutes on 2 cores.
@pytest.mark.slow
def test_a_tiny_office31_grid_starts_from_local_weights_and_is_scored_transductively(host, data_root, tmp_path) -> None:
    write_office31_root(data_root, per_class=3)
    weights = _weights(host, tmp_path, 31)
    assert _grid(data_root, tmp_path, "office31", "amazon_to_webcam",
                 "--teacher-weights", str(weights), "--student-weights", str(weights)) == 0
    assert _done(tmp_path / "store.sqlite") == [("kd", "done"), ("source_only", "done"), ("target_oracle", "done")]
    with sqlite3.connect(tmp_path / "store.sqlite") as db:
        specs = [json.loads(s) for (s,) in db.execute("select spec from runs")]
    assert {s["student_weights"] for s in specs} == {s["teacher"]["weights"] for s in specs} == {
        hashlib.sha256(weights.read_bytes()).hexdigest()[:16]}
    assert all(s["student_pretrained"] and s["teacher"]["pretrained"] for s in specs)
    # Both are fine-tuned as pretrained networks are: the body at a tenth of the classifier's rate.
    assert {s["backbone_lr_mult"] for s in specs} == {s["teacher"]["backbone_lr_mult"] for s in specs} == {0.1}
    assert {s["evaluation"] for s in specs if s["recipe"] != "target_oracle"} == {"transductive"}
    page = (tmp_path / "out" / "office31.md").read_text()
    assert "Evaluation: transductive on amazon→webcam" in page and "| mcc | 94.1 |" in page


def test_a_pretrained_suite_without_weights_says_what_to_put_where(host, data_root, tmp_path, capsys) -> None:
    write_office31_root(data_root, per_class=3)
    assert main(["run", "--suite", "office31", "--tasks", "amazon_to_webcam", "--budget", "smoke", "--seeds", "0",
                 "--recipes", "kd", "--data-root", str(data_root), "--store", str(tmp_path / "s.sqlite"),
                 "--out-dir", str(tmp_path / "out"), "--teacher-weights", str(tmp_path / "absent.pth")]) == 2
    assert "--teacher-weights names" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("suite, task, write, classes", [
    ("officehome", "art_to_clipart", lambda root: write_officehome_root(root, per_class=3), 65),
    ("visda2017", "synthetic_to_real", lambda root: write_visda_root(root, per_class=3), 12),
    ("domainnet", "clipart_to_sketch", lambda root: write_domainnet_root(root, per_class=3, classes=range(4),
                                                                         domains=("clipart", "sketch")), 345),
])
def test_a_tiny_grid_runs_on_each_other_folder_suite(host, suite, task, write, classes, data_root, tmp_path) -> None:
    write(data_root)
    weights = _weights(host, tmp_path, classes)
    assert _grid(data_root, tmp_path, suite, task, "--teacher-weights", str(weights), "--student-weights", str(weights)) == 0
    assert [status for _, status in _done(tmp_path / "store.sqlite")] == ["done"] * 3
