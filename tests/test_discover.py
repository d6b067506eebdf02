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
    with pytest.raises(DiscoveryError, match=r"--classes names 'pneumonia', which hold\(s\) no image in \S+ \(classes "
                                             r"found: covid, normal\); a class without images would count in every "
                                             r"macro average$"):
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


def _png(path, value=60):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((16, 16), value, np.uint8)).save(path, format="PNG")


def test_samples_are_values_that_can_be_kept_in_sets(tmp_path):
    import dataclasses

    class_folder_dataset(tmp_path, per_class=1)
    d = discover(tmp_path)
    assert len(set(d.samples) | set(discover(tmp_path).samples)) == 3 and hash(d) == hash(discover(tmp_path))
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.samples[0].label = "normal"


def test_every_file_is_counted_once_as_a_sample_or_a_failure(tmp_path):
    for name in ("a.png", "b.png", "c.png"):
        _png(tmp_path / "normal" / name)
    (tmp_path / "normal" / "d.jp2").write_bytes(b"\x00\x00\x00\x0cjP  ")
    d = discover(tmp_path)
    assert (len(d.samples), len(d.failures), d.discovered) == (3, 1, 4)


def test_a_file_named_as_an_image_is_a_sample_whatever_it_holds(tmp_path):
    """Its conversion then says why it failed: a .png that is not one is never skipped without a word."""
    _png(tmp_path / "normal" / "a.png")
    (tmp_path / "normal" / "b.png").write_bytes(b"this is not a PNG")
    assert [s.path for s in discover(tmp_path).samples] == ["normal/a.png", "normal/b.png"]


def test_a_file_without_a_suffix_is_a_sample_when_its_first_bytes_say_image(tmp_path):
    from datasets import phantom, write_dicom

    _png(tmp_path / "normal" / "a.png")
    write_dicom(tmp_path / "normal" / "scan0001", np.rint(phantom(8) * 4095).astype(np.uint16))
    (tmp_path / "normal" / "README").write_bytes(b"\0" * 200)
    d = discover(tmp_path)
    assert [s.path for s in d.samples] == ["normal/a.png", "normal/scan0001"] and not d.failures


def test_a_file_that_vanishes_before_it_is_sniffed_is_not_a_sample(tmp_path, monkeypatch):
    import builtins

    _png(tmp_path / "normal" / "a.png")
    (tmp_path / "normal" / "scan0002").write_bytes(b"\x89PNG\r\n\x1a\n")
    real_open = builtins.open

    def vanishing(path, *args, **kwargs):
        if str(path).endswith("scan0002"):
            raise FileNotFoundError(2, "No such file or directory", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", vanishing)
    assert [s.path for s in discover(tmp_path).samples] == ["normal/a.png"]


def test_a_file_that_cannot_be_read_says_why(tmp_path, monkeypatch):
    import errno
    import pathlib

    for name in ("a.png", "locked.png", "private.png", "nfs.png"):
        _png(tmp_path / "normal" / name)
    real_stat, real_access = pathlib.Path.stat, os.access

    def stat(self, **kwargs):
        if self.name == "locked.png" and kwargs.get("follow_symlinks", True):  # the link itself is readable
            raise PermissionError(13, "Permission denied", str(self))
        if self.name == "nfs.png":
            raise OSError(errno.ESTALE, os.strerror(errno.ESTALE), str(self))
        return real_stat(self, **kwargs)

    monkeypatch.setattr(pathlib.Path, "stat", stat)
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p).endswith("private.png") else real_access(p, mode))
    assert dict(discover(tmp_path).failures) == {"normal/locked.png": "cannot read file (Permission denied)",
                                                 "normal/private.png": "cannot read file (Permission denied)",
                                                 "normal/nfs.png": f"cannot read file ({os.strerror(errno.ESTALE)})"}


def test_a_socket_is_a_failure_row(tmp_path):
    import socket

    _png(tmp_path / "n" / "a.png")
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(tmp_path / "n" / "s.png"))
    except OSError:  # a path too long for a socket address
        pytest.skip("the temporary folder's path is too long for a socket")
    finally:
        sock.close()
    assert dict(discover(tmp_path).failures) == {"n/s.png": "not a regular file (socket)"}


def test_a_folder_gone_while_it_is_walked_is_a_row_and_the_walk_goes_on(tmp_path, monkeypatch):
    import pathlib

    for path in ("normal/a.png", "normal/gone/b.png", "normal/later/c.png"):
        _png(tmp_path / path)
    real_stat = pathlib.Path.stat

    def stat(self, **kwargs):
        if self.name == "gone":
            raise FileNotFoundError(2, "No such file or directory", str(self))
        return real_stat(self, **kwargs)

    monkeypatch.setattr(pathlib.Path, "stat", stat)
    d = discover(tmp_path)
    assert [s.path for s in d.samples] == ["normal/a.png", "normal/later/c.png"]
    assert d.failures == (("normal/gone/", "cannot read folder (No such file or directory)"),)


def test_folders_left_out_do_not_stop_the_classes_after_them(tmp_path):
    """A zip extracted on a Mac leaves __MACOSX/ first in name order; a Masks/ folder may sit beside the classes."""
    for path in ("__MACOSX/normal/._a.png", "Masks/m.png", "covid/a.png", "normal/b.png"):
        _png(tmp_path / path)
    d = discover(tmp_path)
    assert d.class_names == ("covid", "normal") and not d.failures


def test_a_class_folder_linked_from_elsewhere_is_a_row_and_the_others_are_read(tmp_path):
    _png(tmp_path / "elsewhere" / "x.png")
    _png(tmp_path / "raw" / "normal" / "b.png")
    _png(tmp_path / "raw" / "pneumonia" / "c.png")
    os.symlink(tmp_path / "elsewhere", tmp_path / "raw" / "covid")
    d = discover(tmp_path / "raw")
    assert d.class_names == ("normal", "pneumonia")
    assert d.failures == (("covid/", "symbolic link leaves the input folder (not followed)"),)


def test_a_link_to_a_text_file_elsewhere_is_ignored_as_the_text_file(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    _png(tmp_path / "raw" / "normal" / "b.png")
    os.symlink(tmp_path / "notes.txt", tmp_path / "raw" / "normal" / "notes.txt")
    d = discover(tmp_path / "raw")
    assert [s.path for s in d.samples] == ["normal/b.png"] and not d.failures


def test_a_read_only_class_folder_is_read(tmp_path, monkeypatch):
    """Read and execute permission are what a class folder needs (a folder on read-only media has no write)."""
    class_folder_dataset(tmp_path, per_class=1)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: (mode & os.W_OK == 0 and real_access(p, mode)))
    assert discover(tmp_path).class_names == ("covid", "normal", "pneumonia")


@pytest.mark.parametrize("folder", ["cases", "scans"])
def test_only_an_images_folder_inside_a_class_takes_masks(tmp_path, folder):
    for path in (f"normal/{folder}/a.png", "normal/masks/a.png", "images/b.png", "masks/b.png",
                 "covid/x/images/c.png", "covid/x/masks/c.png"):
        _png(tmp_path / path)
    masks = {s.path: s.mask for s in discover(tmp_path).samples}
    assert masks == {f"normal/{folder}/a.png": "", "images/b.png": "", "covid/x/images/c.png": "covid/x/masks/c.png"}


def test_of_two_masks_of_an_images_name_the_first_in_name_order_is_taken(tmp_path):
    for path in ("normal/images/a.png", "normal/masks/a.tif", "normal/masks/a.png"):
        _png(tmp_path / path)
    assert discover(tmp_path).samples[0].mask == "normal/masks/a.png"


def test_a_csv_with_masks_links_loops_and_rows_without_a_label(tmp_path):
    for path in ("normal/a.png", "normal/b.png", "normal/c.png", "masks/a.png"):
        _png(tmp_path / path)
    os.symlink(tmp_path / "loop.png", tmp_path / "loop.png")
    (tmp_path / "labels.csv").write_text("path,label,mask\nnormal/a.png,normal,masks/a.png\n"
                                         "normal/b.png,normal,masks/missing.png\nnormal/c.png,normal,\n"
                                         "normal/a.png,normal,\nloop.png,normal,\nnormal/x.png,,\n,normal,\n"
                                         "nul\0.png,normal,\n")
    d = discover(tmp_path, labels=tmp_path / "labels.csv")
    assert [(s.path, s.mask) for s in d.samples] == [("normal/a.png", "masks/a.png"), ("normal/c.png", "")]
    assert dict(d.failures) == {
        "normal/b.png": "its lung mask masks/missing.png: listed in the label file but missing",
        "normal/a.png": "listed more than once in the label file",
        "loop.png": "symbolic link loop", "normal/x.png": "label file row without path or label",
        "<empty path>": "label file row without path or label", "nul\0.png": "listed path holds a NUL character"}


def test_a_listed_path_that_cannot_be_resolved_says_why(tmp_path, monkeypatch):
    import pathlib

    _png(tmp_path / "normal" / "a.png")
    import errno

    (tmp_path / "labels.csv").write_text("path,label\nnormal/a.png,normal\nsecret/b.png,normal\nnfs/c.png,normal\n"
                                         "loop/d.png,normal\n")
    real_resolve = pathlib.Path.resolve

    def resolve(self, strict=False):
        if "secret" in self.parts:
            raise PermissionError(13, "Permission denied", str(self))
        if "nfs" in self.parts:
            raise OSError(errno.ESTALE, os.strerror(errno.ESTALE), str(self))
        if "loop" in self.parts:  # how Python 3.13 says it in strict mode
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), str(self))
        return real_resolve(self, strict=strict)

    monkeypatch.setattr(pathlib.Path, "resolve", resolve)
    d = discover(tmp_path, labels=tmp_path / "labels.csv")
    assert dict(d.failures) == {"secret/b.png": "cannot read file (Permission denied)",
                                "nfs/c.png": f"cannot read file ({os.strerror(errno.ESTALE)})",
                                "loop/d.png": "symbolic link loop"}


@pytest.mark.parametrize(("header", "line"), [("path,class", 1), ("file,label", 1)])
def test_a_csv_without_both_path_and_label_columns_is_refused(tmp_path, header, line):
    (tmp_path / "raw").mkdir()
    (tmp_path / "l.csv").write_text(f"{header}\na.png,normal\n")
    with pytest.raises(DiscoveryError, match=rf"l.csv:{line}: expected a CSV with 'path,label' columns"):
        discover(tmp_path / "raw", labels=tmp_path / "l.csv")


def test_the_line_number_of_a_bad_covidx_line_is_given(tmp_path):
    _png(tmp_path / "raw" / "a.png")
    (tmp_path / "l.txt").write_text("1 a.png normal rsna\n2 b.png normal\n")
    with pytest.raises(DiscoveryError, match=r"l.txt:2: expected a CSV"):
        discover(tmp_path / "raw", labels=tmp_path / "l.txt")


def test_covidx_lines_with_more_columns_are_read(tmp_path):
    _png(tmp_path / "a.png")
    (tmp_path / "l.txt").write_text("17 a.png normal rsna extra columns\n")
    d = discover(tmp_path, labels=tmp_path / "l.txt")
    assert [(s.patient_id, s.path, s.label, s.source) for s in d.samples] == [("17", "a.png", "normal", "rsna")]


def test_a_label_file_that_is_a_folder_or_cannot_be_read_says_so(tmp_path, monkeypatch):
    import pathlib

    (tmp_path / "raw").mkdir()
    with pytest.raises(DiscoveryError, match=r"^label file \S+raw is not a file$"):
        discover(tmp_path / "raw", labels=tmp_path / "raw")
    (tmp_path / "l.csv").write_text("path,label\n")

    def denied(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(pathlib.Path, "read_text", denied)
    with pytest.raises(DiscoveryError, match=r"^cannot read label file \S+l.csv: \[Errno 13\] Permission denied"):
        discover(tmp_path / "raw", labels=tmp_path / "l.csv")


def test_a_path_pattern_takes_its_first_group(tmp_path):
    _png(tmp_path / "normal" / "rsna_17_a.png")
    d = discover(tmp_path, source_pattern=r"([a-z]+)_([0-9]+)", patient_pattern=r"_([0-9]+)_(a)")
    assert (d.samples[0].source, d.samples[0].patient_id) == ("rsna", "17")


@pytest.mark.parametrize(("files", "message"), [
    ({"normal/a.jp2": b"\x00\x00\x00\x0cjP  "}, r"^no image under \S+ can be read: 1 file\(s\) failed, the first "
                                               r"normal/a.jp2: unsupported image format \(.jp2"),
    ({"covid/b.png": None, "normal/a.jp2": b"x"}, r"^no image under \S+ can be read: 2 file\(s\) failed, the first "
                                                  r"covid/b.png: not a regular file \(FIFO\)$"),
    ({"normal/notes.txt": b"x"}, r"^no image files found under \S+ \(looked for "),
])
def test_an_input_where_no_image_can_be_read_says_what_failed(tmp_path, files, message):
    for name, content in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        if content is None:
            os.mkfifo(tmp_path / name)
        else:
            (tmp_path / name).write_bytes(content)
    with pytest.raises(DiscoveryError, match=message):
        discover(tmp_path)


def test_an_empty_class_after_hundreds_of_images_is_said(tmp_path):
    (tmp_path / "a").mkdir()
    for k in range(260):
        (tmp_path / "a" / f"{k}.png").write_bytes(b"a .png: a sample whatever it holds")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("x")
    d = discover(tmp_path)
    assert len(d.samples) == 260 and d.failures == (("b/", "class folder holds no image: not a class"),)


def test_an_input_of_unreadable_files_only_names_the_first(tmp_path, monkeypatch):
    _png(tmp_path / "normal" / "a.png")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p).endswith(".png") else real_access(p, mode))
    with pytest.raises(DiscoveryError, match=r"^no image under \S+ can be read: 1 file\(s\) failed, the first "
                                             r"normal/a.png: cannot read file \(Permission denied\)$"):
        discover(tmp_path)


def test_discover_takes_its_root_by_keyword_and_its_options_only_by_keyword(tmp_path):
    class_folder_dataset(tmp_path, per_class=1)
    assert discover(root=tmp_path).class_names == ("covid", "normal", "pneumonia")
    with pytest.raises(TypeError):
        discover(tmp_path, None)  # a label file passed without its name would be read as something else
