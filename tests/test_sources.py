"""Sources in the store: discovery, /meta/source, the class x source table and Cramér's V."""

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import REAL_DIR
from datasets import class_folder_dataset

from phasefeat.cli import cli
from phasefeat.io.discover import DiscoveryError, discover
from phasefeat.io.inspect_store import class_source_table, cramers_v
from phasefeat.io.store import FORMAT_VERSION, StoreError, open_store
from phasefeat.tools.demo_data import SHORTCUT_SITES, SOURCE_PATTERN, site_of, write_demo_data

SMALL = ["--size", "32", "-q", "--backend", "numpy", "--features-at", "32", "--workers", "1"]


def run(*args, ok=True):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    return result


@pytest.mark.parametrize("table", [[[10, 0], [0, 10]], [[5, 5], [5, 5]], [[7, 1, 0], [2, 6, 3]],
                                   [[20, 0, 0], [10, 10, 0], [0, 0, 20]]])
def test_cramers_v_matches_scipy(table):
    from scipy.stats.contingency import association

    assert cramers_v(table) == pytest.approx(association(np.asarray(table), method="cramer"), abs=1e-12)


def test_cramers_v_extremes_and_degenerate_tables():
    assert cramers_v([[10, 0], [0, 10]]) == pytest.approx(1.0)
    assert cramers_v([[5, 5], [5, 5]]) == pytest.approx(0.0)
    assert np.isnan(cramers_v([[3, 4]]))  # one class: not defined
    assert cramers_v([[3, 0, 0], [0, 4, 0]]) == pytest.approx(1.0)  # empty column dropped


def test_class_source_table_counts_unknown_sources():
    table, names = class_source_table([0, 0, 1, 2], ["b", "", "a", "a"], 3)
    assert names == ["(unknown)", "a", "b"]
    assert table.tolist() == [[1, 0, 1], [0, 1, 0], [0, 1, 0]]


def test_sources_from_a_pattern_a_csv_and_covidx(tmp_path):
    class_folder_dataset(tmp_path, per_class=2)
    d = discover(tmp_path, source_pattern=r"^([^/]+)/images/")
    assert {s.source for s in d.samples} == {"COVID", "Normal", "Viral Pneumonia"}
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label,source\nCOVID/images/COVID 0.png,covid,hospital-a\n"
                   "Normal/images/Normal 0.png,normal,\n")
    d = discover(tmp_path, labels=csv)
    assert [s.source for s in d.samples] == ["hospital-a", ""]
    flat = tmp_path / "flat"
    flat.mkdir()
    for name in ("a.png", "b.png"):
        (flat / name).write_bytes((tmp_path / "COVID" / "images" / "COVID 0.png").read_bytes())
    covidx = tmp_path / "train.txt"
    covidx.write_text("p1 a.png COVID-19 cohen\np2 b.png normal rsna\n")
    d = discover(flat, labels=covidx)
    assert [(s.patient_id, s.source) for s in d.samples] == [("p1", "cohen"), ("p2", "rsna")]
    d = discover(flat, labels=covidx, source_pattern=r"^(\w)\.png")  # the pattern wins
    assert [s.source for s in d.samples] == ["a", "b"]


@pytest.mark.parametrize(("pattern", "message"), [("([a-z", "not a regular expression"),
                                                  ("^[a-z]+_", "needs a group")])
@pytest.mark.parametrize("option", ["--source-pattern", "--patient-pattern"])
def test_bad_path_patterns_are_one_line_errors(tmp_path, pattern, message, option):
    class_folder_dataset(tmp_path / "raw", per_class=1)
    with pytest.raises(DiscoveryError, match=message):
        discover(tmp_path / "raw", **{option[2:].replace("-", "_"): pattern})
    result = run("convert", tmp_path / "raw", tmp_path / "s.h5", *SMALL, option, pattern, ok=False)
    assert result.exit_code == 1 and f"{option} {pattern!r}" in result.output and message in result.output
    assert not (tmp_path / "s.h5").exists()


def test_patient_ids_from_file_names(tmp_path):
    """NIH-style names carry the patient: the pattern's group becomes /meta/patient_id, over a label file's."""
    from PIL import Image

    raw = tmp_path / "raw"
    names = {"normal": ["00000013_000.png", "00000013_001.png", "00000042_000.png"],
             "covid": ["00000099_000.png", "notes-scan.png"]}
    for label, files in names.items():
        (raw / label).mkdir(parents=True)
        for k, name in enumerate(files):
            Image.fromarray(np.full((40, 40), 40 * k + 20, np.uint8)).save(raw / label / name)
    pattern = r"([0-9]+)_[0-9]+[.]png$"
    d = discover(raw, patient_pattern=pattern)
    assert {s.path: s.patient_id for s in d.samples} == {
        "covid/00000099_000.png": "00000099", "covid/notes-scan.png": "",
        "normal/00000013_000.png": "00000013", "normal/00000013_001.png": "00000013",
        "normal/00000042_000.png": "00000042"}
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label,patient_id\nnormal/00000013_000.png,normal,from-csv\n")
    assert [s.patient_id for s in discover(raw, labels=csv, patient_pattern=pattern).samples] == ["00000013"]
    run("convert", raw, tmp_path / "s.h5", *SMALL, "--patient-pattern", pattern)
    with open_store(tmp_path / "s.h5") as store:
        by_path = dict(zip(store.source_paths, store.patient_ids, strict=True))
        assert store.attrs["patient_pattern"] == pattern
    assert by_path["normal/00000013_001.png"] == "00000013" and by_path["covid/notes-scan.png"] == ""


@pytest.fixture(scope="module")
def shortcut_store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("shortcut")
    write_demo_data(tmp / "raw", per_class=6, seed=1, min_size=64, max_size=96, shortcut=True)
    run("convert", tmp / "raw", tmp / "s.h5", *SMALL, "--source-pattern", SOURCE_PATTERN)
    return tmp / "s.h5"


def test_shortcut_demo_data_names_and_marks_each_site(tmp_path):
    from phasefeat.io.imageio import read_image

    write_demo_data(tmp_path, per_class=4, seed=2, min_size=80, max_size=90, shortcut=True)
    for path in sorted(tmp_path.rglob("site*_*")):
        site, name, number = path.stem.split("_")
        assert site == site_of(name, int(number))
        pixels = read_image(path).pixels
        frame = SHORTCUT_SITES[site][1]
        assert abs(float(np.median(pixels[0])) - frame) < 0.06, path.name  # the site's frame
    assert "SHORTCUT" in (tmp_path / "README.txt").read_text()


def test_store_records_sources_and_inspect_shows_the_table(shortcut_store):
    with open_store(shortcut_store) as store:
        sources, labels, names = store.sources, store.labels, store.class_names
        assert store.attrs["format_version"] == FORMAT_VERSION == 2
        assert store.attrs["source_pattern"] == SOURCE_PATTERN
    assert set(sources) == {"sitea", "siteb", "sitec"}
    for path, source, label in zip(open_store(shortcut_store).source_paths, sources, labels, strict=True):
        assert path.split("/")[1].startswith(source) and path.startswith(names[label])
    text = run("inspect", shortcut_store).output
    table, _ = class_source_table(labels, sources, len(names))
    assert f"Cramér's V {cramers_v(table):.2f}" in text
    assert "sitea" in text and "strongly associated" in text


def test_a_version_1_store_reads_with_empty_sources(shortcut_store, tmp_path):
    old = tmp_path / "v1.h5"
    old.write_bytes(shortcut_store.read_bytes())
    with h5py.File(old, "a") as f:
        del f["meta/source"]
        f.attrs["format_version"] = 1
    with open_store(old) as store:
        assert store.sources == [""] * len(store)
    assert "none recorded" in run("inspect", old).output


@pytest.mark.parametrize(("version", "message"), [(3, "newer"), ("two", "not a positive integer"),
                                                  (-1, "not a positive integer"), (1.5, "not a positive")])
def test_unreadable_format_versions_are_refused(shortcut_store, tmp_path, version, message):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(shortcut_store.read_bytes())
    with h5py.File(bad, "a") as f:
        f.attrs["format_version"] = version
    with pytest.raises(StoreError, match=message):
        open_store(bad)


def test_class_source_table_of_the_shared_radiographs(tmp_path):
    """Every normal is from NIH and every COVID image from elsewhere (the folder's README)."""
    from conftest import is_shared_set

    if not is_shared_set():
        pytest.skip(f"the shared radiographs (with their name prefixes) are not at {REAL_DIR}")
    d = discover(REAL_DIR, source_pattern=r"^[^/]+/([a-z]+)_")
    names = list(d.class_names)
    labels = [names.index(s.label) for s in d.samples]
    table, sources = class_source_table(labels, [s.source for s in d.samples], len(names))
    assert sources == ["ieee", "mhh", "nih"]
    assert table.tolist() == [[20, 20, 0], [0, 0, 40], [8, 0, 32]]  # covid, normal, pneumonia
    from scipy.stats.contingency import association

    assert cramers_v(table) == pytest.approx(association(table, method="cramer"), abs=1e-12)
    assert cramers_v(table) == pytest.approx(0.642, abs=0.001)
