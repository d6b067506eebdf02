"""Finding the labelled radiographs of an input folder, whatever its layout.

Three layouts are understood:

* class folders: ``raw/<class>/**/*`` (``masks/`` folders are ignored, so the
  Kaggle ``<class>/images/`` + ``<class>/masks/`` layout works);
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
import os
import re
from pathlib import Path, PurePosixPath

__all__ = ["Sample", "Discovery", "DiscoveryError", "DEFAULT_ALIASES", "IMAGE_SUFFIXES",
           "discover", "normalise_class", "compile_source_pattern"]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".jpe", ".bmp", ".tif", ".tiff", ".dcm", ".dicom"}
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


@dataclasses.dataclass(frozen=True)
class Discovery:
    """What the input holds: samples to convert, files that failed already, class names."""

    root: Path
    samples: tuple[Sample, ...]
    failures: tuple[tuple[str, str], ...]
    class_names: tuple[str, ...]
    layout: str

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


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES


def _class_folders(root: Path, aliases) -> tuple[list[Sample], list[tuple[str, str]]]:
    samples = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if folder.name.casefold() in IGNORED_FOLDERS:
            continue
        label = normalise_class(folder.name, aliases)
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = sorted(d for d in dirnames
                                 if d.casefold() not in IGNORED_FOLDERS and not d.startswith("."))
            for name in sorted(filenames):
                if _is_image_name(name):
                    rel = Path(dirpath, name).relative_to(root).as_posix()
                    samples.append(Sample(rel, label))
    return samples, []


def _resolve_listed(root: Path, listed: str) -> tuple[str | None, str]:
    """Relative posix path of a label-file entry, or (None, reason)."""
    candidate = (root / listed).resolve()
    try:
        rel = candidate.relative_to(root.resolve())
    except ValueError:
        return None, "listed path points outside the input root"
    if not candidate.is_file():
        return None, "listed in the label file but missing"
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
        samples.append(Sample(rel, normalise_class(label, aliases), row.get("patient_id", ""),
                              row.get("source", "")))
    return layout, samples, failures


def compile_source_pattern(pattern: str | None):
    """A compiled ``--source-pattern`` with one capturing group, or None.

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
        raise DiscoveryError(f"--source-pattern {pattern!r} is not a regular expression ({exc})") from None
    if compiled.groups < 1:
        raise DiscoveryError(f"--source-pattern {pattern!r} needs a group, e.g. '^[^/]+/([a-z]+)_': "
                             "the first group's match is the source")
    return compiled


def _with_source(sample: Sample, pattern) -> Sample:
    match = pattern.search(sample.path)
    source = (match.group(1) or "") if match else ""
    return dataclasses.replace(sample, source=source)


def discover(root: str | os.PathLike, *, labels: str | os.PathLike | None = None,
             classes: list[str] | None = None, aliases: dict[str, str] | None = None,
             source_pattern: str | None = None) -> Discovery:
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

    Raises
    ------
    DiscoveryError
        Missing or empty input, no classes found, unreadable label file, a bad
        source pattern.
    """
    pattern = compile_source_pattern(source_pattern)
    root = Path(root)
    if not root.is_dir():
        raise DiscoveryError(f"input folder {root} does not exist or is not a folder")
    if labels is None:
        layout = "class-folders"
        samples, failures = _class_folders(root, aliases)
        if not any(p.is_dir() for p in root.iterdir()):
            raise DiscoveryError(f"no class folders in {root}: expected {root}/<class>/<images>, "
                                 "or pass --labels with a CSV or COVIDx label file")
    else:
        label_path = Path(labels)
        if not label_path.is_file():
            raise DiscoveryError(f"label file {label_path} does not exist")
        layout, samples, failures = _label_file(root, label_path, aliases)
    if not samples and not failures:
        raise DiscoveryError(f"no image files found under {root} "
                             f"(looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    found = sorted({s.label for s in samples})
    if classes:
        pinned = [normalise_class(c, aliases) for c in classes]
        if len(set(pinned)) != len(pinned):
            raise DiscoveryError(f"--classes names a class twice after normalisation: {pinned}")
        keep = [s for s in samples if s.label in pinned]
        failures += [(s.path, f"class {s.label!r} is not among --classes") for s in samples
                     if s.label not in pinned]
        samples, found = keep, pinned
    if not found:
        raise DiscoveryError(f"no classes found in {root}")
    if pattern is not None:
        samples = [_with_source(s, pattern) for s in samples]
    samples.sort(key=lambda s: s.path)
    failures.sort()
    return Discovery(root, tuple(samples), tuple(failures), tuple(found), layout)
