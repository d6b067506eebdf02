"""Input layouts: class folders, CSV and COVIDx label files; aliases; pinned class order."""

import os

import numpy as np
import pytest
from datasets import class_folder_dataset

from phasefeat.io.discover import DiscoveryError, discover, normalise_class


@pytest.mark.parametrize(("name", "expected"), [
    ("COVID", "covid"), ("COVID-19", "covid"), ("covid", "covid"), ("Viral Pneumonia", "pneumonia"),
    ("PNEUMONIA", "pneumonia"), ("Normal", "normal"), ("NORMAL", "normal"), ("No Finding", "normal"),
    ("Lung_Opacity", "lung opacity"), ("  Normal ", "normal"),
])
def test_alias_table(name, expected):
    assert normalise_class(name) == expected


def test_user_aliases_extend_the_table():
    assert normalise_class("Lung_Opacity", {"lung opacity": "pneumonia"}) == "pneumonia"
    assert normalise_class("NORMAL", {"Normal": "healthy-ish"}) == "healthy-ish"


def test_class_folders_kaggle_layout(tmp_path):
    class_folder_dataset(tmp_path, per_class=2)
    d = discover(tmp_path)
    assert d.layout == "class-folders"
    assert d.class_names == ("covid", "normal", "pneumonia")
    assert len(d.samples) == 6 and not d.failures
    assert all("/masks/" not in s.path for s in d.samples)
    assert [s.path for s in d.samples] == sorted(s.path for s in d.samples)
    assert {s.label for s in d.samples if s.path.startswith("Viral Pneumonia/")} == {"pneumonia"}


def test_pinned_class_order_and_exclusions(tmp_path):
    class_folder_dataset(tmp_path, per_class=1)
    d = discover(tmp_path, classes=["Normal", "COVID-19"])
    assert d.class_names == ("normal", "covid")
    assert [s.label for s in d.samples] == ["covid", "normal"]
    assert d.failures == (("Viral Pneumonia/images/Viral Pneumonia 0.png",
                           "class 'pneumonia' is not among --classes"),)
    assert d.discovered == 3


def test_csv_labels_with_patients(tmp_path):
    class_folder_dataset(tmp_path, per_class=1)
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label,patient_id\n"
                   "COVID/images/COVID 0.png,COVID-19,p1\n"
                   "Normal/images/Normal 0.png,No Finding,p2\n"
                   "../outside.png,normal,p3\n"
                   "Normal/images/missing.png,normal,p4\n"
                   "Normal/images/Normal 0.png,normal,p2\n")
    (tmp_path.parent / "outside.png").write_bytes(b"x")
    d = discover(tmp_path, labels=csv)
    assert d.layout == "csv"
    assert [(s.path, s.label, s.patient_id) for s in d.samples] == [
        ("COVID/images/COVID 0.png", "covid", "p1"), ("Normal/images/Normal 0.png", "normal", "p2")]
    assert dict(d.failures) == {
        "../outside.png": "listed path points outside the input root",
        "Normal/images/missing.png": "listed in the label file but missing",
        "Normal/images/Normal 0.png": "listed more than once in the label file"}


def test_covidx_label_file(tmp_path):
    class_folder_dataset(tmp_path, per_class=1)
    (tmp_path / "train.txt").write_text("17 Normal/images/Normal_0.png normal rsna\n"
                                        "18 nothing.png pneumonia rsna\n")
    (tmp_path / "Normal" / "images" / "Normal_0.png").write_bytes(
        (tmp_path / "Normal" / "images" / "Normal 0.png").read_bytes())
    d = discover(tmp_path, labels=tmp_path / "train.txt")
    assert d.layout == "covidx"
    assert [(s.path, s.label, s.patient_id) for s in d.samples] == [
        ("Normal/images/Normal_0.png", "normal", "17")]
    assert d.failures == (("nothing.png", "listed in the label file but missing"),)


@pytest.mark.parametrize(("setup", "message"), [
    ("missing", "does not exist"), ("empty", "no class folders"), ("no-images", "no image files"),
    ("bad-labels", "expected a CSV"), ("empty-labels", "is empty"),
])
def test_unusable_inputs(tmp_path, setup, message):
    root = tmp_path / "raw"
    labels = None
    if setup != "missing":
        root.mkdir()
    if setup == "no-images":
        (root / "normal").mkdir()
        (root / "normal" / "notes.txt").write_text("x")
    if setup in ("bad-labels", "empty-labels"):
        labels = tmp_path / "l.txt"
        labels.write_text("just one column\n" if setup == "bad-labels" else "\n")
    with pytest.raises(DiscoveryError, match=message):
        discover(root, labels=labels)


def test_links_stay_inside_their_class_folder(tmp_path):
    """A link to .. would re-import other classes under the wrong label; one leaving the input folder
    would import files from elsewhere: both are failure rows, and no folder is walked twice."""
    from PIL import Image

    root, elsewhere = tmp_path / "raw", tmp_path / "elsewhere"
    for folder in (root / "covid" / "sub", root / "normal", elsewhere):
        folder.mkdir(parents=True)
    for k, path in enumerate([root / "covid" / "c0.png", root / "covid" / "sub" / "c1.png",
                              root / "normal" / "n0.png", elsewhere / "x.png"]):
        Image.fromarray(np.full((16, 16), 30 * k, np.uint8)).save(path)
    os.symlink("..", root / "covid" / "up")
    os.symlink(elsewhere, root / "covid" / "outside")
    os.symlink("sub", root / "covid" / "again")
    os.symlink(root / "normal" / "n0.png", root / "covid" / "borrowed.png")
    os.symlink(elsewhere / "x.png", root / "covid" / "far.png")
    os.symlink(root / "covid" / "c0.png", root / "covid" / "same-class.png")
    d = discover(root)
    found = {(s.path, s.label) for s in d.samples}
    twice = {("covid/again/c1.png", "covid"), ("covid/sub/c1.png", "covid")}  # one folder, two ways in
    assert len(found & twice) == 1 and found - twice == {
        ("covid/c0.png", "covid"), ("covid/same-class.png", "covid"), ("normal/n0.png", "normal")}
    reasons = dict(d.failures)
    assert reasons["covid/up/"].startswith("symbolic link to a folder above its class folder")
    assert reasons["covid/outside/"].startswith("symbolic link leaves the input folder")
    assert reasons["covid/far.png"].startswith("symbolic link leaves the input folder")
    assert reasons["covid/borrowed.png"].startswith("symbolic link into another class's folder")
    assert "symbolic link loop (folder already visited)" in (reasons.get("covid/again/"), reasons.get("covid/sub/"))


def test_mistakes_in_the_layout_are_said_not_skipped(tmp_path):
    """Loose images in the root, an empty class folder and formats that are not read are failure
    rows; a class pinned with --classes but holding no image is refused."""
    from PIL import Image

    root = tmp_path / "raw"
    for folder in ("covid", "normal", "pneumonia"):
        (root / folder).mkdir(parents=True)
    for k, path in enumerate([root / "covid" / "c.png", root / "normal" / "n.png", root / "stray.png"]):
        Image.fromarray(np.full((16, 16), 40 * k, np.uint8)).save(path)
    (root / "normal" / "scan.jp2").write_bytes(b"\x00\x00\x00\x0cjP  \r\n\x87\n")
    (root / "covid" / "phone.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic")
    d = discover(root)
    reasons = dict(d.failures)
    assert reasons["stray.png"] == "image outside any class folder (move it into one)"
    assert reasons["pneumonia/"] == "class folder holds no image: not a class"
    assert reasons["normal/scan.jp2"].startswith("unsupported image format (.jp2")
    assert reasons["covid/phone.HEIC"].startswith("unsupported image format (.heic")
    assert d.class_names == ("covid", "normal") and not d.warnings
    with pytest.raises(DiscoveryError, match="--classes names 'pneumonia', which hold\\(s\\) no image"):
        discover(root, classes=["covid", "normal", "pneumonia"])


def test_an_input_one_level_too_high_is_said(tmp_path):
    class_folder_dataset(tmp_path / "downloads" / "dataset", per_class=1)
    d = discover(tmp_path / "downloads")
    assert d.class_names == ("dataset",) and "one level above the class folders" in d.warnings[0]
    from click.testing import CliRunner

    from phasefeat.cli import cli

    result = CliRunner().invoke(cli, ["convert", str(tmp_path / "downloads"), str(tmp_path / "s.h5"), "--size",
                                      "32", "--features-at", "32", "-q", "--backend", "numpy"])
    assert result.exit_code == 0 and "warning: only one class ('dataset') holds images" in result.output


def test_a_mask_of_the_same_name_beside_images_becomes_the_samples_lung_mask(tmp_path):
    """`Sample.mask` was never checked: `.../images/NAME` takes `.../masks/NAME.*` (any image suffix), and
    only that; a mask of another name, or none, leaves it without one."""
    from PIL import Image

    class_folder_dataset(tmp_path, per_class=2)  # masks named m0.png, m1.png: no image has their name
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(tmp_path / "COVID" / "masks" / "COVID 0.jpg")
    d = discover(tmp_path)
    masks = {s.path: s.mask for s in d.samples}
    assert masks["COVID/images/COVID 0.png"] == "COVID/masks/COVID 0.jpg"
    assert [p for p, m in masks.items() if m] == ["COVID/images/COVID 0.png"]
    assert len(d.samples) == 6  # the masks themselves are not samples


def test_an_unreadable_folder_is_a_row_and_an_unreadable_class_an_error(tmp_path, monkeypatch):
    """Permissions as a user other than root meets them (the tests may run as root, who reads anything):
    a subfolder that cannot be listed is a failure row; a class folder that can be listed but not
    entered (read without execute permission) stops the discovery, unless --classes leaves it out."""
    root = tmp_path / "raw"
    class_folder_dataset(root, per_class=2)
    (root / "Normal" / "images" / "private").mkdir()
    real_scandir, real_access = os.scandir, os.access

    def scandir(path="."):
        if str(path).endswith("private"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    d = discover(root)
    assert ("Normal/images/private/", "cannot read folder (Permission denied)") in d.failures
    monkeypatch.setattr(os, "access", lambda p, mode: (mode & os.X_OK == 0) if str(p).endswith("COVID")
                        else real_access(p, mode))
    with pytest.raises(DiscoveryError, match="class folder .*COVID cannot be read"):
        discover(root)
    kept = discover(root, classes=["normal", "pneumonia"])  # excluded anyway: no error
    assert kept.class_names == ("normal", "pneumonia")


def test_entries_that_cannot_be_read_are_failure_rows_with_their_reason(tmp_path):
    root = tmp_path / "raw"
    class_folder_dataset(root, per_class=1)
    folder = root / "Normal" / "images"
    os.symlink(folder / "nowhere.png", folder / "dangling.png")
    os.symlink(folder / "loop.png", folder / "loop.png")
    os.symlink("/dev/null", folder / "device.png")
    os.mkfifo(folder / "fifo.png")
    os.mkfifo(folder / "scan0002")  # no suffix: it might be an image, so it is a row, not skipped
    (folder / "notes").write_bytes(b"not an image, no suffix: ignored")
    reasons = {path.removeprefix("Normal/images/"): why for path, why in discover(root).failures}
    assert reasons == {"dangling.png": "dangling symbolic link (its target does not exist)",
                       "loop.png": "symbolic link loop", "device.png": "not a regular file (device)",
                       "fifo.png": "not a regular file (FIFO)", "scan0002": "not a regular file (FIFO)"}


def test_a_file_name_that_cannot_be_stored_is_a_failure_row(tmp_path):
    root = tmp_path / "raw"
    class_folder_dataset(root, per_class=1)
    image = (root / "Normal" / "images" / "Normal 0.png").read_bytes()
    with open(os.fsencode(root / "Normal" / "images") + b"/bad\xffname.png", "wb") as handle:
        handle.write(image)
    (root / "Normal" / "images" / "two\nlines.png").write_bytes(image)
    reasons = dict(discover(root).failures)
    assert reasons == {"Normal/images/bad\\xffname.png": "file name is not valid UTF-8 (rename it)",
                       "Normal/images/two\nlines.png": "file name holds a control character such as a "
                                                       "newline or tab (rename it)"}


def test_mask_folders_and_suffixes_match_in_any_case(tmp_path):
    """`Images/` and `Masks/` (or `mask/`) as some archives spell them, `.PNG` masks: each image
    takes the mask of its name; the mask folders are never read as images."""
    from PIL import Image

    def write(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((16, 16), 50, np.uint8)).save(path, format="PNG")

    for path in ("covid/Images/a.png", "covid/Masks/a.PNG", "normal/images/b.png", "normal/mask/b.png",
                 "normal/images/c.png", "pneumonia/scans/d.png", "pneumonia/masks/d.png"):
        write(tmp_path / path)
    d = discover(tmp_path)
    assert {s.path: s.mask for s in d.samples} == {
        "covid/Images/a.png": "covid/Masks/a.PNG", "normal/images/b.png": "normal/mask/b.png",
        "normal/images/c.png": "", "pneumonia/scans/d.png": ""}  # only an images/ folder has masks beside it
    write(tmp_path / "normal" / "masks" / "b.png")
    assert {s.path: s.mask for s in discover(tmp_path).samples}["normal/images/b.png"] == "normal/masks/b.png"


def test_a_class_named_twice_in_classes_is_refused(tmp_path):
    class_folder_dataset(tmp_path, per_class=1)
    with pytest.raises(DiscoveryError, match=r"--classes names 'normal' twice after normalisation "
                                             r"\(Normal, COVID-19, NORMAL\)"):
        discover(tmp_path, classes=["Normal", "COVID-19", "NORMAL"])


def test_one_class_in_a_label_file_is_not_an_input_one_level_too_high(tmp_path):
    class_folder_dataset(tmp_path, per_class=1)
    (tmp_path / "labels.csv").write_text("path,label\nNormal/images/Normal 0.png,normal\n")
    d = discover(tmp_path, labels=tmp_path / "labels.csv")
    assert d.class_names == ("normal",) and d.warnings == ()


def test_a_line_that_is_neither_csv_nor_covidx_is_quoted_to_80_characters(tmp_path):
    (tmp_path / "raw").mkdir()
    line = "x" * 79 + "yz"
    (tmp_path / "l.txt").write_text(f"{line}\n")
    with pytest.raises(DiscoveryError) as error:
        discover(tmp_path / "raw", labels=tmp_path / "l.txt")
    assert str(error.value).endswith(f"l.txt:1: expected a CSV with 'path,label' columns or COVIDx lines "
                                     f"'patient_id filename class source', got {line[:80]!r}")
