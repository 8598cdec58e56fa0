"""The Office-31, Office-Home, VisDA-2017 and DomainNet suites: what they declare, and how their domains list files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from folder_files import write_domainnet_root, write_office31_root, write_officehome_root, write_visda_root

from cdkd_bench import DataContext, DomainFiles, UserError
from cdkd_bench.plugins import Host
from cdkd_plugins.domains.domainnet import DOMAINNET_CLASSES
from cdkd_plugins.domains.image_layouts import held_out, read_image_list
from cdkd_plugins.domains.office import OFFICE31_CLASSES, OFFICE31_HOMEPAGE, OFFICEHOME_CLASSES, OFFICEHOME_HOMEPAGE
from cdkd_plugins.domains.visda import VISDA_CLASSES

SUITES = ("office31", "officehome", "visda2017", "domainnet")


def locate(host: Host, domain: str, root: Path | None) -> DomainFiles:
    found = host.domains.get(domain).locate
    assert found is not None
    return found(DataContext(root, root or Path("unused")))


def labelled(files: DomainFiles) -> dict[Path, int]:
    assert files.train is not None and files.test is not None
    return dict(zip(files.train.paths + files.test.paths, files.train.labels + files.test.labels, strict=True))


def one_sentence(error: pytest.ExceptionInfo[UserError]) -> str:
    message = str(error.value)
    assert "\n" not in message and ". " not in message, message
    return message


def test_the_suites_declare_the_tllib_protocol(host: Host) -> None:
    for name in SUITES:
        suite = host.suite(name)
        assert (suite.image_size, suite.crop_size, suite.pretrained) == (256, 224, True)
        assert (suite.default_teacher, suite.default_student, suite.default_budget) == ("resnet50", "resnet18", "quick")
        assert suite.teacher_augmentation is not None and suite.teacher_augmentation.crop_area == (0.08, 1.0)
        assert set(suite.views) == {"weak", "strong"}
        assert suite.budgets["smoke"].teacher_steps == 4 and suite.budgets["smoke"].backbone_lr_mult == 0.1
        assert suite.budgets["paper"].student_steps == 20_000 and suite.budgets["paper"].batch_size == 32
        for domain in suite.domains:
            assert host.domains.get(domain).load is None and host.domains.get(domain).download is None
        transductive = name != "domainnet"
        assert set(suite.transductive_targets) == (set(suite.domains) if transductive else set())
    assert [t.name for t in host.suite("visda2017").tasks] == ["visda2017.synthetic_to_real"]
    assert len(host.suite("officehome").tasks) == 12 and len(host.suite("domainnet").tasks) == 30
    office31 = host.suite("office31")
    short = {t.name.removeprefix("office31.") for t in office31.tasks}
    assert {r.task for r in office31.published} == short
    assert len(office31.published) == 42 and {r.recipe for r in office31.published} >= {"source_only", "dann", "mcc"}
    [erm] = [r for r in office31.published if (r.task, r.recipe) == ("amazon_to_webcam", "source_only")]
    assert erm.accuracy == 75.8 and "oracle" in erm.protocol
    expected = {"office31.amazon": 2817, "office31.dslr": 498, "office31.webcam": 795, "officehome.art": 2427,
                "officehome.real_world": 4357, "visda2017.synthetic": 152_397, "visda2017.real": 55_388, "domainnet.real": 172_947}
    assert {name: host.domains.get(name).expected_images for name in expected} == expected
    assert len(OFFICE31_CLASSES) == 31 and len(OFFICEHOME_CLASSES) == 65 and len(DOMAINNET_CLASSES) == 345
    assert len(set(OFFICEHOME_CLASSES)) == 65 and len(set(DOMAINNET_CLASSES)) == 345


def test_office31_lists_every_image_with_its_class_list_label(host: Host, tmp_path: Path) -> None:
    root = write_office31_root(tmp_path, per_class=2)
    for domain in ("amazon", "dslr", "webcam"):
        files = locate(host, f"office31.{domain}", root)
        labels = labelled(files)
        on_disk = sorted((root / "office31" / domain / "images").rglob("*.jpg"))
        assert sorted(labels) == on_disk and sorted(files.sources) == on_disk
        assert all(labels[path] == OFFICE31_CLASSES.index(path.parent.name) for path in on_disk)
        assert files.train is not None and files.test is not None
        assert list(files.train.paths) == sorted(files.train.paths) and list(files.test.paths) == sorted(files.test.paths)
        assert files == locate(host, f"office31.{domain}", root)  # deterministic


def test_officehome_labels_follow_the_class_list_not_the_folder_order(host: Host, tmp_path: Path) -> None:
    root = write_officehome_root(tmp_path, classes=["Alarm_Clock", "Drill", "ToothBrush", "Marker"])
    labels = labelled(locate(host, "officehome.real_world", root))
    by_class = {path.parent.name: label for path, label in labels.items()}
    # Alarm_Clock comes first on disk, but Drill is class 0 in TLlib's list.
    assert by_class == {"Drill": 0, "ToothBrush": 17, "Alarm_Clock": 33, "Marker": 64}


def test_the_held_out_split_is_a_stable_fifth_by_path(host: Host, tmp_path: Path) -> None:
    names = [f"office31/amazon/images/mug/frame_{i:04d}.jpg" for i in range(3000)]
    fraction = sum(map(held_out, names)) / len(names)
    assert 0.17 < fraction < 0.23
    assert [held_out(n) for n in names] == [held_out(n) for n in names]
    root = write_office31_root(tmp_path, per_class=3)
    files = locate(host, "office31.amazon", root)
    assert files.train is not None and files.test is not None
    assert len(files.test.paths) > 0 and not set(files.train.paths) & set(files.test.paths)
    assert all(held_out(p.relative_to(root).as_posix()) for p in files.test.paths)
    assert not any(held_out(p.relative_to(root).as_posix()) for p in files.train.paths)
    # An added image never moves another one.
    extra = root / "office31" / "amazon" / "images" / "mug" / "added.jpg"
    shutil.copy(files.train.paths[0], extra)
    again = locate(host, "office31.amazon", root)
    assert again.train is not None and again.test is not None
    assert set(files.test.paths) <= set(again.test.paths) and set(files.train.paths) <= set(again.train.paths)


def test_the_image_list_parser_reads_paths_and_labels(tmp_path: Path) -> None:
    for name in ("a/x.jpg", "b/y z.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    list_file = tmp_path / "list.txt"
    list_file.write_text("a/x.jpg 3\n\n  b/y z.png 0  \n", encoding="utf-8")
    listed = read_image_list(list_file, tmp_path, num_classes=4)
    assert [(i.line, i.relative, i.path, i.label) for i in listed] == [
        (1, "a/x.jpg", tmp_path / "a/x.jpg", 3), (3, "b/y z.png", tmp_path / "b/y z.png", 0)]


def test_visda_lists_its_image_lists(host: Host, tmp_path: Path) -> None:
    root = write_visda_root(tmp_path, per_class=2)
    for domain, split in (("synthetic", "train"), ("real", "validation")):
        files = locate(host, f"visda2017.{domain}", root)
        folder = root / "visda2017" / split
        labels = labelled(files)
        assert len(labels) == 24 and files.sources[0] == folder / "image_list.txt"
        assert sorted(files.sources[1:]) == sorted(labels)
        assert all(labels[path] == VISDA_CLASSES.index(path.parent.name) for path in labels)


def test_domainnet_takes_split_and_labels_from_its_lists(host: Host, tmp_path: Path) -> None:
    chosen = ["aircraft_carrier", "cello", "The_Eiffel_Tower", "zigzag"]
    root = write_domainnet_root(tmp_path, per_class=2, classes=chosen, domains=["clipart"])
    files = locate(host, "domainnet.clipart", root)
    base = root / "domainnet"
    assert files.train is not None and files.test is not None
    assert len(files.train.paths) == len(files.test.paths) == 8
    assert files.sources[:2] == (base / "clipart_train.txt", base / "clipart_test.txt")
    assert set(files.sources[2:]) == set(files.train.paths) | set(files.test.paths)
    assert all(label == DOMAINNET_CLASSES.index(path.parent.name) for path, label in labelled(files).items())
    # A label given to two class folders.
    test_list = base / "clipart_test.txt"
    lines = test_list.read_text(encoding="utf-8").splitlines()
    lines[-1] = lines[-1].rsplit(" ", 1)[0] + " 0"
    test_list.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(UserError) as error:
        locate(host, "domainnet.clipart", root)
    message = one_sentence(error)
    assert str(test_list) in message and f"line {len(lines)}" in message and "'zigzag'" in message and "'aircraft_carrier'" in message


# --------------------------------------------------------------------------- one test per mistake


def test_no_data_root_says_how_to_give_one(host: Host) -> None:
    for domain in ("office31.amazon", "officehome.art", "visda2017.real", "domainnet.sketch"):
        with pytest.raises(UserError) as error:
            locate(host, domain, None)
        message = one_sentence(error)
        assert "--data-root" in message and "CDKD_BENCH_DATA" in message and domain in message


def test_a_missing_domain_folder_names_the_layout_and_homepage(host: Host, tmp_path: Path) -> None:
    with pytest.raises(UserError) as error:
        locate(host, "office31.webcam", tmp_path)
    message = one_sentence(error)
    assert f"{tmp_path / 'office31' / 'webcam' / 'images'}/<class>/*.jpg" in message and OFFICE31_HOMEPAGE in message
    # Office-Home's archive spells "Real World" with a space: the error says where to move it.
    (tmp_path / "officehome" / "Real World").mkdir(parents=True)
    with pytest.raises(UserError) as error:
        locate(host, "officehome.real_world", tmp_path)
    message = one_sentence(error)
    assert OFFICEHOME_HOMEPAGE in message and "Real World" in message and str(tmp_path / "officehome" / "Real_World") in message


def test_an_unknown_class_folder_is_named(host: Host, tmp_path: Path) -> None:
    root = write_office31_root(tmp_path, classes=["mug"])
    (root / "office31" / "dslr" / "images" / "backpack").mkdir()
    with pytest.raises(UserError) as error:
        locate(host, "office31.dslr", root)
    assert str(root / "office31" / "dslr" / "images" / "backpack") in one_sentence(error)


def test_a_missing_class_folder_is_named(host: Host, tmp_path: Path) -> None:
    root = write_officehome_root(tmp_path, classes=["Mug"])
    shutil.rmtree(root / "officehome" / "Clipart" / "Push_Pin")
    with pytest.raises(UserError) as error:
        locate(host, "officehome.clipart", root)
    message = one_sentence(error)
    assert "'Push_Pin'" in message and str(root / "officehome" / "Clipart") in message


def test_an_image_list_naming_a_missing_file_is_named(host: Host, tmp_path: Path) -> None:
    root = write_visda_root(tmp_path, classes=["bus", "car"])
    list_file = root / "visda2017" / "validation" / "image_list.txt"
    missing = list_file.read_text(encoding="utf-8").splitlines()[1].rsplit(" ", 1)[0]
    (list_file.parent / missing).unlink()
    with pytest.raises(UserError) as error:
        locate(host, "visda2017.real", root)
    message = one_sentence(error)
    assert str(list_file) in message and "line 2" in message and missing in message


def test_an_image_list_line_that_does_not_parse_is_named(host: Host, tmp_path: Path) -> None:
    root = write_visda_root(tmp_path, classes=["bus"])
    list_file = root / "visda2017" / "train" / "image_list.txt"
    list_file.write_text(list_file.read_text(encoding="utf-8") + "\nbus/no_label.png\n", encoding="utf-8")
    with pytest.raises(UserError) as error:
        locate(host, "visda2017.synthetic", root)
    message = one_sentence(error)
    assert str(list_file) in message and "line 3" in message and "bus/no_label.png" in message


def test_an_image_list_label_out_of_range_is_named(host: Host, tmp_path: Path) -> None:
    root = write_domainnet_root(tmp_path, classes=["bus"], domains=["sketch"])
    list_file = root / "domainnet" / "sketch_train.txt"
    relative = list_file.read_text(encoding="utf-8").split()[0]
    list_file.write_text(f"{relative} 345\n", encoding="utf-8")
    with pytest.raises(UserError) as error:
        locate(host, "domainnet.sketch", root)
    message = one_sentence(error)
    assert str(list_file) in message and "line 1" in message and relative in message and "345" in message
