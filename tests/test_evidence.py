"""benchmarks/enh_evidence.py: the default's statistics on real radiographs, and the pairs comparison."""

import re
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REAL_DIR, is_shared_set, real_image_paths
from PIL import Image

from phasefeat import PhaseParams, enhance
from phasefeat.tools.phantom import chest_phantom

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import benchmarks.enh_evidence as evidence  # noqa: E402


def documented_row(label: str) -> tuple[list[float], list[float], float]:
    """Means, stds and distance of one configuration from the table in docs/algorithm.md."""
    text = (REPO / "docs" / "algorithm.md").read_text()
    match = re.search(rf"^\| {re.escape(label)} \| ([\d./]+) \| ([\d./]+) \| [\d.]+ % \| ([\d.]+) \|",
                      text, re.M)
    assert match, f"no row for {label!r} in docs/algorithm.md"
    means, stds = ([float(v) for v in match.group(k).split("/")] for k in (1, 2))
    return means, stds, float(match.group(3))


@pytest.mark.slow
def test_default_statistics_on_the_shared_radiographs_match_the_docs():
    """Regression guard: the default's row of the evidence table is what the code computes."""
    paths = real_image_paths()
    if not is_shared_set():
        pytest.skip(f"the documented table is for the 120 shared radiographs, not {REAL_DIR}")
    means, stds, distance = documented_row("qi2021 @ native")
    config = next(c for c in evidence.CONFIGS if c[0] == "qi2021 @ native")
    row = evidence.statistics(paths, [config], 299, progress=False, workers=2)[0]
    assert row["images"] == 120, "the documented table is over the 120 shared radiographs"
    got_means = [row["mean"][n] for n in evidence.CHANNELS]
    got_stds = [row["std"][n] for n in evidence.CHANNELS]
    assert np.allclose(got_means, means, atol=0.005) and np.allclose(got_stds, stds, atol=0.005)
    assert row["distance_to_qi"] == pytest.approx(distance, abs=0.005)


def test_best_order_distance_is_zero_for_qi_statistics_in_any_order():
    mean = dict(zip(("elea", "lwpa", "lpe"), evidence.QI_MEAN, strict=True))
    std = dict(zip(("elea", "lwpa", "lpe"), evidence.QI_STD, strict=True))
    distance, order = evidence.best_order(mean, std)
    assert distance == pytest.approx(0, abs=1e-12) and order == ("elea", "lwpa", "lpe")


def test_pairs_recover_the_configuration_and_channel_order(tmp_path):
    """Released-style pairs made with qi2021 and a shuffled order: the comparison finds both."""
    cxr_dir, enh_dir = tmp_path / "CXR", tmp_path / "Enh"
    params = PhaseParams()
    shuffle = ("elea", "lwpa", "lpe")  # the released RGB, as named channels
    for k, shape in enumerate([(96, 96), (80, 112)]):
        grey = chest_phantom(shape, seed=k, dtype="uint8")
        (cxr_dir / "covid").mkdir(parents=True, exist_ok=True)
        (enh_dir / "covid").mkdir(parents=True, exist_ok=True)
        Image.fromarray(grey).save(cxr_dir / "covid" / f"img{k}.png")
        enh = enhance(grey, params, out="uint8")
        rgb = np.stack([enh[..., params.channel_order.index(n)] for n in shuffle], axis=-1)
        Image.fromarray(rgb).save(enh_dir / "covid" / f"img{k}.jpg.png")  # suffix may differ
    pairs = evidence.pair_paths(cxr_dir, enh_dir)
    assert len(pairs) == 0  # names differ beyond the suffix: img0 vs img0.jpg
    for p in (enh_dir / "covid").iterdir():
        p.rename(p.with_name(p.name.replace(".jpg", "")))
    pairs = evidence.pair_paths(cxr_dir, enh_dir)
    assert len(pairs) == 2
    rows = {r["config"]: r for r in evidence.compare_pairs(pairs, evidence.CONFIGS, progress=False)}
    assert set(rows) == {"qi2021", "qi2021 fixed", "kovesi", "assd_lpe"}
    best = rows["qi2021"]
    assert best["released_rgb_is"] == list(shuffle)
    # uint8 in, float read back: float32 rounding moves a few pixels by one level at most.
    assert max(best["mean_abs_difference"]) < 0.01 and min(best["correlation"]) > 0.9999
    assert min(rows["kovesi"]["mean_abs_difference"]) > 5
