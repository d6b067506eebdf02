"""Golden values of ENH: a few exact numbers per preset that any change of results must explain.

``tests/test_golden.py`` compares against ``tests/golden/enh.json``. When a change of numbers
is intended, regenerate the file and say why in CHANGELOG.md:

    python tests/golden_values.py --write
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "golden" / "enh.json"
PRESETS = ("qi2021", "kovesi", "assd_lpe")
REAL = ("normal/nih_00001299_000.png", "covid/mhh_073a8f93.png")  # relative to the shared folder
# Fixed pixel positions in a 128 x 128 image: corners, edges and the inside.
PIXELS = [(0, 0), (0, 127), (127, 0), (127, 127), (5, 64), (64, 5), (64, 64), (30, 90), (90, 30),
          (100, 100), (17, 33), (111, 71)]


def inputs(real_dir: Path) -> dict[str, np.ndarray]:
    """Two phantoms always; two shared radiographs where the folder is present (128 x 128, 0..255)."""
    sys.path.insert(0, str(HERE))
    from conftest import load_real

    from phasefeat.tools.phantom import chest_phantom

    out = {"phantom-seed-5": chest_phantom(128, seed=5, dtype="float64") * 255,
           "phantom-covid-seed-6": chest_phantom(128, seed=6, dtype="float64", finding="covid") * 255}
    for rel in REAL:
        if (real_dir / rel).is_file():
            out[rel] = load_real(real_dir / rel, 128)
    return out


def values(image: np.ndarray, preset: str) -> dict:
    from phasefeat import PhaseParams, enhance

    params = PhaseParams.preset(preset)
    enh = enhance(image, params, dtype="float64") * 255
    return {"channel_order": list(params.channel_order),
            "channel_means": enh.mean(axis=(0, 1)).tolist(),
            "pixels": [enh[y, x].tolist() for y, x in PIXELS]}


def compute(real_dir: Path) -> dict:
    return {name: {preset: values(image, preset) for preset in PRESETS}
            for name, image in inputs(real_dir).items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="(re)write tests/golden/enh.json")
    parser.add_argument("--real", type=Path, default=HERE.parents[1] / "shared" / "data" / "cxr-real")
    args = parser.parse_args(argv)
    if not args.write:
        parser.error("pass --write to regenerate the golden values (and explain the change)")
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps(compute(args.real), indent=1) + "\n")
    print(f"wrote {GOLDEN.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
