"""Finding the labelled radiographs of an input folder, whatever its layout.

Three layouts are understood:

* class folders: ``raw/<class>/**/*`` (``masks/`` folders are not read as images, so
  the Kaggle ``<class>/images/`` + ``<class>/masks/`` layout works: a mask with the same
  name as an image beside its ``images/`` folder becomes that image's lung mask);
* a CSV label file with ``path,label`` columns (optional ``patient_id`` and
  ``source``);
* COVIDx label files: ``patient_id filename class source`` separated by spaces,
  no header.

Each sample may carry the *source* it came from (the hospital, archive or
collection): the CSV ``source`` column, the COVIDx fourth column, or the first
group of ``source_pattern`` matched against the sample's relative path.

Class names are normalised through an alias table (``COVID-19`` -> ``covid``...)
that users can extend. The result is sorted, so the sample order never depends
on the file system or on the number of workers.
"""

from __future__ import annotations

import csv
import dataclasses
import errno
import glob
import os
import re
from collections import Counter
from pathlib import Path, PurePosixPath

__all__ = ["Sample", "Discovery", "DiscoveryError", "DEFAULT_ALIASES", "IMAGE_SUFFIXES",
           "discover", "normalise_class", "compile_source_pattern"]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".jpe", ".bmp", ".tif", ".tiff", ".dcm", ".dicom", ".gif",
                  ".webp"}
#: Suffixes of files that are certainly not radiographs (read neither by name nor by content).
EMPTY_CLASS = "class folder holds no image: not a class"
#: Image formats that are not read: said so in a failure row, never skipped without a word.
UNSUPPORTED_SUFFIXES = {".jp2", ".j2k", ".jpx", ".jpf", ".heic", ".heif", ".avif", ".jxl"}
TEXT_SUFFIXES = {".txt", ".csv", ".md", ".json", ".xlsx", ".xls", ".html", ".pdf", ".zip", ".gz",
                 ".tar", ".h5", ".npz", ".py", ".yaml", ".yml", ".xml", ".log"}
IGNORED_FOLDERS = {"masks", "mask", "__macosx"}

DEFAULT_ALIASES = {
    "covid": "covid", "covid-19": "covid", "covid19": "covid", "covid_19": "covid",
    "pneumonia": "pneumonia", "viral pneumonia": "pneumonia", "bacterial pneumonia": "pneumonia",
    "normal": "normal", "no finding": "normal", "no_finding": "normal", "healthy": "normal",
}


class DiscoveryError(ValueError):
    """The input cannot be used at all (no files, no classes, unreadable label file)."""


@dataclasses.dataclass(frozen=True)
class Sample:
    """One file to convert: its path relative to the input root, class, patient and source."""

    path: str
    label: str
    patient_id: str = ""
    source: str = ""
    mask: str = ""


@dataclasses.dataclass(frozen=True)
class Discovery:
    """What the input holds: samples to convert, files that failed already, class names."""

    root: Path
    samples: tuple[Sample, ...]
    failures: tuple[tuple[str, str], ...]
    class_names: tuple[str, ...]
    layout: str
    #: Things a user should hear about that are not failed files (an input one level too high).
    warnings: tuple[str, ...] = ()

    @property
    def discovered(self) -> int:
        return len(self.samples) + len(self.failures)


def normalise_class(name: str, aliases: dict[str, str] | None = None) -> str:
    """Canonical class name: alias lookup on a case- and space-folded key.

    Unknown names are kept, lower-cased with runs of spaces/underscores as one
    space, so ``Lung_Opacity`` becomes ``lung opacity``.
    """
    table = {**DEFAULT_ALIASES, **{k.casefold(): v for k, v in (aliases or {}).items()}}
    key = re.sub(r"[\s_]+", " ", name.strip()).casefold()
    return table.get(key, table.get(key.replace(" ", "_"), key))


def _display(path: str) -> str:
    """A path as it can be stored and printed: undecodable bytes of a name become escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _entry_problem(path: Path) -> str | None:
    """Why ``path`` cannot be read as a file, or None for a readable regular file."""
    import stat

    try:
        st = path.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symbolic link loop"
        if os.path.islink(path):  # False where the link itself cannot be read (a stale NFS handle)
            return "dangling symbolic link (its target does not exist)"
        return f"cannot read file ({exc.strerror or exc})"
    if not stat.S_ISREG(st.st_mode):
        kind = ("FIFO" if stat.S_ISFIFO(st.st_mode) else "socket" if stat.S_ISSOCK(st.st_mode)
                else "device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "special file")
        return f"not a regular file ({kind})"
    if not os.access(path, os.R_OK):
        return "cannot read file (Permission denied)"
    return None


def _looks_like_an_image(path: Path) -> bool:
    """Content sniffing for files whose name says nothing (no or an unknown suffix)."""
    from .imageio import sniff_format

    try:
        with open(path, "rb") as handle:
            return sniff_format(handle.read(132)) is not None
    except OSError:
        return False


def _classify(path: Path, rel: str) -> tuple[str, str]:
    """``("sample", rel)``, ``("failure", reason)`` or ``("ignore", "")`` for one directory entry."""
    if _display(rel) != rel:
        return "failure", "file name is not valid UTF-8 (rename it)"
    if not rel.isprintable():
        return "failure", "file name holds a control character such as a newline or tab (rename it)"
    name = path.name
    if name.startswith("."):
        return "ignore", ""
    suffix = Path(name).suffix.lower()
    if suffix in TEXT_SUFFIXES:
        return "ignore", ""
    if suffix in UNSUPPORTED_SUFFIXES:
        return "failure", f"unsupported image format ({suffix}: convert it to PNG, TIFF or JPEG)"
    problem = _entry_problem(path)
    if suffix in IMAGE_SUFFIXES:
        return ("failure", problem) if problem else ("sample", rel)
    if problem:  # an unreadable file with an unknown name: it might be an image
        return "failure", problem
    return ("sample", rel) if _looks_like_an_image(path) else ("ignore", "")


def _boundary(target: Path, class_dir: Path, root: Path) -> str | None:
    """Why a linked file or folder (resolved to ``target``) may not be read under this class, or None.

    A link may point anywhere inside its own class folder; one that leaves the input folder, or
    reaches into another class's folder, would import images from elsewhere or under the wrong label.
    """
    if not target.is_relative_to(root):
        return "symbolic link leaves the input folder (not followed)"
    if target != class_dir and class_dir.is_relative_to(target):
        return "symbolic link to a folder above its class folder (not followed: it would change labels)"
    if not target.is_relative_to(class_dir):
        return "symbolic link into another class's folder (not followed: it would change the label)"
    return None


def _class_folders(root: Path, aliases, classes) -> tuple[list[Sample], list[tuple[str, str]]]:
    samples, failures = [], []
    pinned = {normalise_class(c, aliases) for c in classes} if classes else None
    real_root = root.resolve()
    seen = set()  # every folder is walked once, whatever links lead to it
    for loose in sorted(p for p in root.iterdir() if not p.is_dir()):
        kind, _ = _classify(loose, loose.name)
        if kind == "sample":
            failures.append((_display(loose.name), "image outside any class folder (move it into one)"))
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if folder.name.casefold() in IGNORED_FOLDERS:
            continue
        label = normalise_class(folder.name, aliases)
        if not os.access(folder, os.R_OK | os.X_OK):
            if pinned is not None and label not in pinned:
                continue  # excluded anyway
            raise DiscoveryError(f"class folder {folder} cannot be read (permission denied); fix its "
                                 "permissions or leave the class out with --classes")
        class_dir = folder.resolve()
        if not class_dir.is_relative_to(real_root):
            failures.append((_display(folder.name) + "/", "symbolic link leaves the input folder (not followed)"))
            continue

        def unreadable(exc, folder=folder):
            rel = Path(exc.filename).relative_to(root).as_posix() if exc.filename else folder.name
            failures.append((_display(rel) + "/", f"cannot read folder ({exc.strerror or exc})"))

        before = len(samples)
        for dirpath, dirnames, filenames in os.walk(folder, onerror=unreadable, followlinks=True):
            here = Path(dirpath)
            try:
                st = here.stat()
            except OSError as exc:  # gone since it was listed: its files can no longer be read
                unreadable(exc)
                dirnames[:] = []
                continue
            outside = _boundary(here.resolve(), class_dir, real_root)
            if (st.st_dev, st.st_ino) in seen or outside:  # a link back to a folder already walked
                failures.append((_display(here.relative_to(root).as_posix()) + "/",
                                 outside or "symbolic link loop (folder already visited)"))
                dirnames[:] = []
                continue
            seen.add((st.st_dev, st.st_ino))
            dirnames[:] = sorted(d for d in dirnames
                                 if d.casefold() not in IGNORED_FOLDERS and not d.startswith("."))
            for name in sorted(filenames):
                path = here / name
                rel = path.relative_to(root).as_posix()
                kind, value = _classify(path, rel)
                if kind == "sample" and path.is_symlink():
                    outside = _boundary(path.resolve(), class_dir, real_root)
                    kind, value = ("failure", outside) if outside else (kind, value)
                if kind == "sample":
                    samples.append(Sample(value, label))
                elif kind == "failure":
                    failures.append((_display(rel), value))
        if len(samples) == before and (pinned is None or label in pinned):
            failures.append((_display(folder.name) + "/", EMPTY_CLASS))
    return _with_masks(root, samples), failures


def _with_masks(root: Path, samples: list[Sample]) -> list[Sample]:
    """Give each ``.../images/NAME`` the lung mask ``.../masks/NAME`` (any image suffix), if there is one.

    Folder names and suffixes match in any case (``Images/``, ``Masks/``, ``.PNG``), as the folders
    left out of the images are; ``mask/`` is read where there is no ``masks/``.
    """
    beside: dict[Path, list[Path]] = {}
    out = []
    for sample in samples:
        parts = PurePosixPath(sample.path).parts
        if len(parts) >= 3 and parts[-2].casefold() == "images":  # inside a class folder, never its root
            folder = root.joinpath(*parts[:-2])
            if folder not in beside:  # "masks" sorts after "mask": reversed, masks/ comes first
                beside[folder] = sorted((p for p in folder.iterdir() if p.is_dir()
                                         and p.name.casefold() in ("masks", "mask")),
                                        key=lambda p: (p.name.casefold(), p.name), reverse=True)
            stem = PurePosixPath(parts[-1]).stem
            for masks in beside[folder]:
                found = sorted(p for p in masks.glob(f"{glob.escape(stem)}.*")
                               if p.suffix.lower() in IMAGE_SUFFIXES)
                if found:
                    sample = dataclasses.replace(sample, mask=found[0].relative_to(root).as_posix())
                    break
        out.append(sample)
    return out


def _resolve_listed(root: Path, listed: str) -> tuple[str | None, str]:
    """Relative posix path of a label-file entry, or (None, reason)."""
    try:
        candidate = (root / listed).resolve()
    except RuntimeError:  # what Python 3.11 and 3.12 raise for a symbolic link loop
        return None, "symbolic link loop"
    except OSError as exc:
        return None, "symbolic link loop" if exc.errno == errno.ELOOP else f"cannot read file ({exc.strerror or exc})"
    except ValueError:
        return None, "listed path holds a NUL character"
    try:
        rel = candidate.relative_to(root.resolve())
    except ValueError:
        return None, "listed path points outside the input root"
    if not os.path.lexists(root / listed):
        return None, "listed in the label file but missing"
    problem = _entry_problem(root / listed)
    if problem:
        return None, problem
    return PurePosixPath(*rel.parts).as_posix(), ""


def _read_label_rows(label_file: Path) -> tuple[str, list[dict]]:
    try:
        text = label_file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DiscoveryError(f"cannot read label file {label_file}: {exc}") from None
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise DiscoveryError(f"label file {label_file} is empty")
    header = [h.strip().casefold() for h in next(csv.reader([lines[0]]))]
    if "path" in header and "label" in header:
        rows = list(csv.DictReader(lines))
        return "csv", [{k.strip().casefold(): (v or "").strip() for k, v in row.items() if k}
                       for row in rows]
    rows = []
    for number, line in enumerate(lines, 1):
        parts = line.split()
        if len(parts) < 4:
            raise DiscoveryError(
                f"{label_file}:{number}: expected a CSV with 'path,label' columns or COVIDx lines "
                f"'patient_id filename class source', got {line.strip()[:80]!r}")
        rows.append({"patient_id": parts[0], "path": parts[1], "label": parts[2], "source": parts[3]})
    return "covidx", rows


def _label_file(root: Path, label_file: Path, aliases):
    layout, rows = _read_label_rows(label_file)
    samples, failures, seen = [], [], set()
    for row in rows:
        listed, label = row.get("path", ""), row.get("label", "")
        if not listed or not label:
            failures.append((listed or "<empty path>", "label file row without path or label"))
            continue
        rel, reason = _resolve_listed(root, listed)
        if rel is None:
            failures.append((listed, reason))
            continue
        if rel in seen:
            failures.append((listed, "listed more than once in the label file"))
            continue
        seen.add(rel)
        mask = ""
        if row.get("mask"):
            mask, reason = _resolve_listed(root, row["mask"])
            if mask is None:
                failures.append((listed, f"its lung mask {row['mask']}: {reason}"))
                continue
        samples.append(Sample(rel, normalise_class(label, aliases), row.get("patient_id", ""),
                              row.get("source", ""), mask))
    return layout, samples, failures


def compile_source_pattern(pattern: str | None, option: str = "--source-pattern",
                           example: str = "'^[^/]+/([a-z]+)_'", what: str = "source"):
    """A compiled path pattern (``--source-pattern``, ``--patient-pattern``) with a capturing group, or None.

    Raises
    ------
    DiscoveryError
        For an invalid regular expression or one without a group.
    """
    if pattern is None:
        return None
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise DiscoveryError(f"{option} {pattern!r} is not a regular expression ({exc})") from None
    if compiled.groups < 1:
        raise DiscoveryError(f"{option} {pattern!r} needs a group, e.g. {example}: "
                             f"the first group's match is the {what}")
    return compiled


def _from_path(sample: Sample, pattern, field: str) -> Sample:
    """``sample`` with ``field`` (source, patient_id) set to the first group of ``pattern`` in its path."""
    match = pattern.search(sample.path)
    return dataclasses.replace(sample, **{field: (match.group(1) or "") if match else ""})


def discover(root: str | os.PathLike, *, labels: str | os.PathLike | None = None,
             classes: list[str] | None = None, aliases: dict[str, str] | None = None,
             source_pattern: str | None = None, patient_pattern: str | None = None) -> Discovery:
    """List the samples of an input folder.

    Parameters
    ----------
    root : path-like
        The input folder; sample paths are relative to it.
    labels : path-like, optional
        A CSV (``path,label[,patient_id]``) or COVIDx label file. Without it the
        first-level folders of ``root`` are the classes.
    classes : list of str, optional
        Pin the label order (after alias normalisation); samples of other
        classes are reported as failures. Default: alphanumeric order.
    aliases : dict, optional
        Extra ``name -> class`` entries on top of :data:`DEFAULT_ALIASES`.
    source_pattern : str, optional
        Regular expression searched in each sample's relative path (POSIX
        separators); its first group is the sample's source (empty where it does
        not match). Overrides a label file's source column.
    patient_pattern : str, optional
        The same for the patient id (e.g. NIH names ``00000013_005.png`` carry the
        patient before the underscore). Overrides a label file's patient column.

    Raises
    ------
    DiscoveryError
        Missing or empty input, no classes found, unreadable label file, a bad
        source pattern.
    """
    pattern = compile_source_pattern(source_pattern)
    patient = compile_source_pattern(patient_pattern, "--patient-pattern", "'([0-9]+)_[0-9]+[.]png$'",
                                     "patient id")
    root = Path(root)
    if not root.is_dir():
        raise DiscoveryError(f"input folder {root} does not exist or is not a folder")
    if labels is None:
        layout = "class-folders"
        samples, failures = _class_folders(root, aliases, classes)
        if not any(p.is_dir() for p in root.iterdir()):
            raise DiscoveryError(f"no class folders in {root}: expected {root}/<class>/<images>, "
                                 "or pass --labels with a CSV or COVIDx label file")
    else:
        label_path = Path(labels)
        if not label_path.is_file():
            raise DiscoveryError(f"label file {label_path} " + ("is not a file" if os.path.lexists(label_path)
                                                                 else "does not exist"))
        layout, samples, failures = _label_file(root, label_path, aliases)
    if not samples:
        failed = [(path, reason) for path, reason in sorted(failures) if reason != EMPTY_CLASS]
        if not failed:
            raise DiscoveryError(f"no image files found under {root} "
                                 f"(looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
        raise DiscoveryError(f"no image under {root} can be read: {len(failed)} file(s) failed, the first "
                             f"{failed[0][0]}: {failed[0][1]}")
    found = sorted({s.label for s in samples})
    if classes:
        pinned = [normalise_class(c, aliases) for c in classes]
        twice = sorted(c for c, n in Counter(pinned).items() if n > 1)
        if twice:
            raise DiscoveryError(f"--classes names {', '.join(map(repr, twice))} twice after normalisation "
                                 f"({', '.join(classes)})")
        empty = [c for c in pinned if c not in found]
        if empty:
            raise DiscoveryError(f"--classes names {', '.join(map(repr, empty))}, which hold(s) no image in "
                                 f"{root} (classes found: {', '.join(found) or 'none'}); a class without "
                                 "images would count in every macro average")
        keep = [s for s in samples if s.label in pinned]
        failures += [(s.path, f"class {s.label!r} is not among --classes") for s in samples
                     if s.label not in pinned]
        samples, found = keep, pinned
    if pattern is not None:
        samples = [_from_path(s, pattern, "source") for s in samples]
    if patient is not None:
        samples = [_from_path(s, patient, "patient_id") for s in samples]
    samples.sort(key=lambda s: s.path)
    failures.sort()
    warnings = []
    if len(found) == 1 and layout == "class-folders":
        warnings.append(f"only one class ({found[0]!r}) holds images: if {root} is one level above the class "
                        "folders, pass the folder that holds them instead")
    return Discovery(root, tuple(samples), tuple(failures), tuple(found), layout, tuple(warnings))
