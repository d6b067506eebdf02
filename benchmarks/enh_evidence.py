"""Which ENH configuration looks like the ENH the study used? Statistics, pictures, and pairs.

Qi et al. released enhanced images but no enhancement code; the only numbers
known about those images are their per-channel means and standard deviations
(uint8/255, loaded as RGB), whose channel order is undocumented. This script
computes the same statistics for each preset, scaling and feature resolution on
a folder of radiographs, and the distance to Qi's statistics with the best
channel order (Euclidean over the six numbers):

    python benchmarks/enh_evidence.py ../shared/data/cxr-real          # table + JSON record
    python benchmarks/enh_evidence.py RAW --figure enh-real.png         # + 3 radiographs, each config

Marginal statistics narrow the choice; they do not prove it. Pairs would: given
a folder of Qi et al.'s released radiographs and the folder of their enhanced
images (same relative file names, e.g. the ``CXR/`` and ``Enh/`` folders of
their Kaggle collection), ``--pairs`` recomputes each configuration at the
enhanced image's resolution and reports, for the best of the six channel orders,
the mean absolute difference in grey levels and the per-channel correlation:

    python benchmarks/enh_evidence.py --pairs CXR/ Enh/ --limit 200
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

#: Qi et al.'s released "Enh" images: per-channel mean and std of uint8/255, RGB as PIL loads
#: them (commented constants in endiqq/Multi-Scale-Feature-Fusion, data/utils.py).
QI_MEAN = (0.634, 0.502, 0.196)
QI_STD = (0.365, 0.325, 0.110)
CHANNELS = ("lwpa", "lpe", "elea")
SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm"}
#: (label, preset, scaling, features_at) of each configuration compared.
CONFIGS = (
    ("qi2021 @ store", "qi2021", "minmax", None),
    ("qi2021 @ native", "qi2021", "minmax", "native"),
    ("qi2021 fixed @ store", "qi2021", "fixed", None),
    ("qi2021 fixed @ native", "qi2021", "fixed", "native"),
    ("kovesi @ store", "kovesi", "minmax", None),
    ("kovesi @ native", "kovesi", "minmax", "native"),
    ("assd_lpe @ store", "assd_lpe", "minmax", None),
    ("assd_lpe @ native", "assd_lpe", "minmax", "native"),
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, default=REPO.parent / "shared" / "data" / "cxr-real",
                        help="radiographs, searched recursively (default: ../shared/data/cxr-real)")
    parser.add_argument("--size", type=int, default=299, help="stored size (299, as the study)")
    parser.add_argument("--configs", default="all",
                        help="comma-separated labels of CONFIGS to run, or 'all'")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N images (0: all)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (all cores)")
    parser.add_argument("--figure", type=Path, default=None,
                        help="also draw one radiograph per class folder with each configuration's maps")
    parser.add_argument("--pairs", nargs=2, type=Path, metavar=("CXR_DIR", "ENH_DIR"), default=None,
                        help="compare with released enhanced images pixel by pixel instead")
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "enh-evidence.json",
                        help="record to write (default benchmarks/results/enh-evidence.json)")
    return parser.parse_args(argv)


def image_paths(folder: Path, limit: int = 0) -> list[Path]:
    paths = sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
    return paths[:limit] if limit else paths


def selected(spec: str):
    if spec == "all":
        return CONFIGS
    wanted = [s.strip() for s in spec.split(",") if s.strip()]
    known = {c[0]: c for c in CONFIGS}
    missing = [w for w in wanted if w not in known]
    if missing:
        raise SystemExit(f"unknown configuration(s) {missing}; known: {list(known)}")
    return [known[w] for w in wanted]


def enh_of(pixels: np.ndarray, config, size: int) -> tuple[np.ndarray, tuple[str, ...]]:
    """uint8 ENH at ``size`` exactly as ``phasefeat convert`` stores it, and its channel names."""
    from phasefeat import PhaseParams
    from phasefeat.io.imageio import fit
    from phasefeat.io.pieces import ConvertOptions, enhance_to_store, feature_image

    _, preset, scaling, features_at = config
    params = PhaseParams.preset(preset, scaling=scaling)
    opts = ConvertOptions(size=size, features_at=features_at)
    features = feature_image(pixels, opts)
    if features is None:
        features = np.clip(fit(pixels, size), 0, 1)
    return enhance_to_store(features[None], params, opts, "numpy")[0], params.channel_order


def best_order(mean: dict, std: dict) -> tuple[float, tuple[str, ...]]:
    """Smallest distance to Qi's six numbers over the channel orders, and that order."""
    best = (math.inf, CHANNELS)
    for order in itertools.permutations(CHANNELS):
        d = math.sqrt(sum((mean[n] - m) ** 2 + (std[n] - s) ** 2
                          for n, m, s in zip(order, QI_MEAN, QI_STD, strict=True)))
        best = min(best, (d, order))
    return best


def _image_sums(task) -> dict:
    """Per configuration: per-channel sum and sum of squares of uint8/255, and the ELEA share at 255."""
    from phasefeat.io.imageio import read_image

    path, configs, size = task
    pixels = read_image(path).pixels
    out = {}
    for config in configs:
        enh, order = enh_of(pixels, config, size)
        x = enh.astype(np.float64) / 255
        out[config[0]] = {name: (x[..., c].sum(), (x[..., c] ** 2).sum()) for c, name in enumerate(order)}
        out[config[0]]["elea255"] = float((enh[..., order.index("elea")] == 255).mean())
    return out


def statistics(paths, configs, size: int, progress=True, workers: int = 1) -> list[dict]:
    """Per-channel mean, std and share of ELEA at 255 of every configuration over ``paths``."""
    import multiprocessing

    from tqdm import tqdm

    configs = [tuple(c) for c in configs]
    acc = {c[0]: {n: [0.0, 0.0] for n in CHANNELS} | {"elea255": 0.0} for c in configs}
    tasks = [(p, configs, size) for p in paths]
    pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 else None
    try:
        results = pool.imap(_image_sums, tasks) if pool else map(_image_sums, tasks)
        for sums in tqdm(results, total=len(tasks), desc="images", disable=not progress):
            for label, per in sums.items():
                for name in CHANNELS:
                    acc[label][name][0] += per[name][0]
                    acc[label][name][1] += per[name][1]
                acc[label]["elea255"] += per["elea255"]
    finally:
        if pool:
            pool.close()
            pool.join()
    rows = []
    total = len(paths) * size * size
    for label, preset, scaling, features_at in configs:
        a = acc[label]
        mean = {n: a[n][0] / total for n in CHANNELS}
        std = {n: math.sqrt(max(a[n][1] / total - mean[n] ** 2, 0)) for n in CHANNELS}
        distance, order = best_order(mean, std)
        rows.append({"config": label, "preset": preset, "scaling": scaling,
                     "features_at": features_at or "store size", "images": len(paths),
                     "mean": mean, "std": std, "elea_at_255": a["elea255"] / len(paths),
                     "distance_to_qi": distance, "best_order": list(order)})
    return rows


def pair_paths(cxr_dir: Path, enh_dir: Path, limit: int = 0) -> list[tuple[Path, Path]]:
    """(radiograph, enhanced image) pairs with the same relative path (suffix may differ)."""
    enhanced = {p.relative_to(enh_dir).with_suffix("").as_posix(): p for p in image_paths(enh_dir)}
    pairs = [(p, enhanced[key]) for p in image_paths(cxr_dir)
             if (key := p.relative_to(cxr_dir).with_suffix("").as_posix()) in enhanced]
    return pairs[:limit] if limit else pairs


def compare_pairs(pairs, configs, progress=True) -> list[dict]:
    """Per (preset, scaling): the best channel order's mean |difference| and per-channel correlation.

    Each configuration is computed on the radiograph at the released image's resolution, so
    ``features_at`` plays no part here and configurations that differ only in it are run once.
    """
    from PIL import Image
    from tqdm import tqdm

    from phasefeat import PhaseParams, enhance
    from phasefeat.io.imageio import read_image, resize

    variants = {}
    for _, preset, scaling, _ in configs:
        variants.setdefault(preset if scaling == "minmax" else f"{preset} {scaling}",
                            PhaseParams.preset(preset, scaling=scaling))
    orders = list(itertools.permutations(range(3)))
    sums = {label: np.zeros((len(orders), 2, 3)) for label in variants}  # [order, (mad, corr), slot]
    for cxr_path, enh_path in tqdm(pairs, desc="pairs", disable=not progress):
        with Image.open(enh_path) as im:
            released = np.asarray(im.convert("RGB"), dtype=np.float64)
        h, w = released.shape[:2]
        pixels = read_image(cxr_path).pixels
        grey = pixels if pixels.shape == (h, w) else np.clip(resize(pixels, (h, w)), 0, 1)
        for label, params in variants.items():
            ours = enhance(grey, params, out="uint8").astype(np.float64)
            for k, order in enumerate(orders):
                for slot, c in enumerate(order):
                    a, b = ours[..., c], released[..., slot]
                    sums[label][k, 0, slot] += np.abs(a - b).mean()
                    if a.std() > 0 and b.std() > 0:
                        sums[label][k, 1, slot] += np.corrcoef(a.ravel(), b.ravel())[0, 1]
    rows = []
    for label, params in variants.items():
        mean = sums[label] / max(len(pairs), 1)
        k = int(np.argmin(mean[:, 0].mean(axis=1)))
        rows.append({"config": label, "pairs": len(pairs),
                     "released_rgb_is": [params.channel_order[c] for c in orders[k]],
                     "mean_abs_difference": mean[k, 0].tolist(), "correlation": mean[k, 1].tolist()})
    return rows


def draw(paths, configs, size: int, out: Path) -> Path:
    """One radiograph per class folder; per configuration a row of CXR, LwPA, LPE, ELEA, composite."""
    from phasefeat.io.imageio import fit, read_image
    from phasefeat.tools.figures import preview_figure

    chosen = {}
    for p in paths:
        chosen.setdefault(p.parent.name, p)
    rows = []
    for folder, path in chosen.items():
        pixels = read_image(path).pixels
        cxr = fit(pixels, size)
        for config in configs:
            enh, order = enh_of(pixels, config, size)
            named = np.stack([enh[..., order.index(n)] for n in CHANNELS], axis=-1)
            rows.append((f"{folder}: {path.name[:22]}\n{config[0]}", cxr, named))
    return preview_figure(rows, CHANNELS, out, title="ENH of each configuration (channels shown "
                          "as LwPA, LPE, ELEA; composite in that order)")


def print_stats(rows) -> None:
    print(f"{'configuration':<24s} {'means L/P/E':>20s} {'stds L/P/E':>20s} {'ELEA=255':>9s} "
          f"{'distance':>9s}  best order")
    for r in rows:
        m = "/".join(f"{r['mean'][n]:.3f}" for n in CHANNELS)
        s = "/".join(f"{r['std'][n]:.3f}" for n in CHANNELS)
        print(f"{r['config']:<24s} {m:>20s} {s:>20s} {100 * r['elea_at_255']:>8.1f}% "
              f"{r['distance_to_qi']:>9.3f}  [{', '.join(r['best_order'])}]")
    print(f"Qi et al.'s released Enh (RGB): means {'/'.join(map(str, QI_MEAN))}, "
          f"stds {'/'.join(map(str, QI_STD))}")


def main(argv=None) -> int:
    args = parse_args(argv)
    configs = selected(args.configs)
    from benchmarks._record import write_record
    from phasefeat.backend import cpu_model

    if args.pairs:
        pairs = pair_paths(*args.pairs, limit=args.limit)
        if not pairs:
            raise SystemExit(f"no pairs with the same relative name in {args.pairs[0]} and {args.pairs[1]}")
        rows = compare_pairs(pairs, configs)
        for r in rows:
            print(f"{r['config']:<18s} released RGB = ({', '.join(r['released_rgb_is'])}): "
                  f"|difference| {np.round(r['mean_abs_difference'], 1)} grey levels, "
                  f"correlation {np.round(r['correlation'], 3)}")
        write_record(args.json.with_name(args.json.stem + "-pairs.json"), "enh-evidence-pairs",
                     cpu_model(), rows=rows)
        return 0
    paths = image_paths(args.folder, args.limit)
    if not paths:
        raise SystemExit(f"no radiographs under {args.folder}")
    rows = statistics(paths, configs, args.size, workers=args.workers)
    print_stats(rows)
    write_record(args.json, "enh-evidence", cpu_model(),
                 settings={"folder": args.folder.name, "images": len(paths), "size": args.size,
                           "qi_mean": QI_MEAN, "qi_std": QI_STD}, rows=rows)
    if args.figure:
        print(f"wrote {draw(paths, configs, args.size, args.figure)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
