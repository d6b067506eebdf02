"""The store card (`phasefeat inspect STORE --html`): every section, every image embedded, nothing fetched;
a store without sources says what it cannot show; and the card as a browser renders it."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from datasets import tiny_store
from PIL import Image

from phasefeat.cli import cli
from phasefeat.tools.store_card import (
    SECTIONS,
    bit_depth,
    card_summary,
    ks_distance,
    most_different,
)


def _with_sources(path, sources, modes=None, sizes=None):
    with h5py.File(path, "r+") as f:
        f["meta/source"][...] = np.array(sources, dtype=object)
        if modes is not None:
            f["meta/orig_mode"][...] = np.array(modes, dtype=object)
        if sizes is not None:
            f["meta/orig_width"][...] = np.array(sizes)
            f["meta/orig_height"][...] = np.array(sizes)
    return path


def _images(page: str) -> list[Image.Image]:
    return [Image.open(io.BytesIO(base64.b64decode(d))) for d in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


def test_a_card_with_sources_has_every_section_and_names_what_differs(tmp_path):
    n = 24
    path = tiny_store(tmp_path / "s.h5", n=n, size=32)
    labels = np.arange(n) % 3  # covid, normal, pneumonia, ...
    # covid from archive "a" at 16 bits and 512 px, the rest from "b" at 8 bits and 1024 px: a giveaway
    sources = ["a" if k == 0 else "b" for k in labels]
    _with_sources(path, sources, modes=["I;16" if k == 0 else "L" for k in labels],
                  sizes=[512 if k == 0 else 1024 for k in labels])
    result = CliRunner().invoke(cli, ["inspect", str(path), "--html", str(tmp_path / "card.html")])
    assert result.exit_code == 0, result.output
    summary = card_summary(tmp_path / "card.html")
    assert summary["sections"] == list(SECTIONS) and summary["external"] == []
    page = (tmp_path / "card.html").read_text()
    images = _images(page)
    assert len(images) == summary["images"] == 13  # thumbnails x2, means x2, panel, 4 properties x 2 groups
    assert all(im.size[0] >= 300 for im in images)
    assert "Cramér's V 1.00</strong>" in page and "the source nearly gives the class away" in page
    differ = re.search(r"<strong>Differ most:</strong> ([^<]*)", page).group(1)
    assert "original size (longer side, px): classes covid and normal (D = 1.00)" in differ
    assert "original size (longer side, px): sources a and b (D = 1.00)" in differ
    assert "I;16: 8" in page  # the modes table, per class
    assert "A clean card is no proof of a clean dataset" in page


def test_a_card_without_sources_says_what_it_cannot_show(tmp_path):
    path = _with_sources(tiny_store(tmp_path / "s.h5", n=9, size=32), [""] * 9)
    result = CliRunner().invoke(cli, ["inspect", str(path), "--html", str(tmp_path / "card.html"), "--seed", "3"])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "card.html").read_text()
    assert card_summary(tmp_path / "card.html")["sections"] == list(SECTIONS)
    assert "No sources are recorded in this store, so the card cannot show which hospital" in page
    assert "Without recorded sources it cannot show the class x source table" in page
    assert "per source" not in page.split("What this card cannot show")[0].replace("Images per source", "")
    assert len(_images(page)) == 7  # thumbnails, means and properties per class only, and the panel


def test_the_card_is_refused_before_work_where_it_cannot_be_written(tmp_path):
    path = tiny_store(tmp_path / "s.h5", n=9, size=32)
    result = CliRunner().invoke(cli, ["inspect", str(path), "--html", str(tmp_path / "no" / "card.html")])
    assert result.exit_code == 2 and "its folder does not exist" in result.output
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize(("mode", "bits"), [("L", 8), ("RGB", 8), ("I;16", 16), ("I;16B", 16), ("1", 1),
                                            ("DICOM MONOCHROME2 12-bit", 12), ("I", 32),
                                            ("RGBA (alpha dropped: 3.0 % of pixels not opaque)", 8)])
def test_bit_depth_from_the_recorded_mode(mode, bits):
    assert bit_depth(mode) == bits


def test_ks_distance_is_scipys_two_sample_statistic():
    from scipy.stats import ks_2samp

    rng = np.random.default_rng(0)
    for _ in range(20):
        a, b = rng.normal(size=rng.integers(1, 40)), rng.normal(0.5, size=rng.integers(1, 40))
        assert ks_distance(a, b) == pytest.approx(ks_2samp(a, b).statistic, abs=1e-12)
    assert ks_distance([1, 2], [1, 2]) == 0 and ks_distance([0, 0], [5]) == 1


def test_most_different_names_the_pair_furthest_apart():
    values = np.array([0, 1, 2, 10, 11, 12, 1, 2, 3], dtype=float)
    groups = {"x": np.array([0, 1, 2]), "y": np.array([3, 4, 5]), "z": np.array([6, 7, 8]), "empty": np.array([], int)}
    a, b, d = most_different(values, groups)
    assert {a, b} in ({"x", "y"}, {"y", "z"}) and d == 1.0
    assert most_different(values, {"x": np.array([0])}) is None


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
def test_the_card_renders_in_a_browser_at_1280_px(tmp_path):
    path = tiny_store(tmp_path / "s.h5", n=12, size=32)
    _with_sources(path, ["a", "b", "c"] * 4)
    card = tmp_path / "card.html"
    assert CliRunner().invoke(cli, ["inspect", str(path), "--html", str(card)]).exit_code == 0
    shot = tmp_path / "card.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars"]
    done = subprocess.run([CHROMIUM, *flags, f"--screenshot={shot}", "--window-size=1280,4000", card.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    picture = np.asarray(Image.open(shot).convert("L"))
    assert picture.shape == (4000, 1280) and picture.std() > 20  # drawn, not a blank page
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", card.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.stdout.count("<img") == card_summary(card)["images"] and "<h2>What the store is</h2>" in dom.stdout


@pytest.mark.slow
def test_the_card_of_the_shared_radiographs_shows_their_giveaways(tmp_path):
    """Normal images all from NIH, COVID-19 from two other archives: the card's table, V and properties say so."""
    from conftest import REAL_DIR, is_shared_set

    if not is_shared_set():
        pytest.skip(f"the shared radiographs (with their name prefixes) are not at {REAL_DIR}")
    store = tmp_path / "real.h5"
    converted = CliRunner().invoke(cli, ["convert", str(REAL_DIR), str(store), "--size", "64", "--features-at", "64",
                                         "--source-pattern", "^[^/]+/([a-z]+)_", "-q"])
    assert converted.exit_code == 0, converted.output
    result = CliRunner().invoke(cli, ["inspect", str(store), "--html", str(tmp_path / "card.html")])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "card.html").read_text()
    assert card_summary(tmp_path / "card.html")["sections"] == list(SECTIONS)
    assert "<th>ieee</th><th>mhh</th><th>nih</th>" in page
    assert "<tr><td>normal</td><td>0</td><td>0</td><td>40</td><td>40</td></tr>" in page
    v = float(re.search(r"Cramér's V ([0-9.]+)</strong>", page).group(1))
    assert v > 0.5 and "the source nearly gives the class away" in page
    assert len(_images(page)) == 13 and "<strong>Differ most:</strong>" in page
