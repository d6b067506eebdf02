"""How long the store card takes, and how much memory, for a store of the study's size and beyond.

    python benchmarks/bench_card.py [--samples 2000,20000] [--json PATH]

For each size, writes a store of that many phantoms at the default size (299 x 299; 64 distinct phantoms and their
ENH, repeated, with varied labels, sources, original sizes and modes: reading and the card's work do not
depend on which phantom a sample is), then times ``phasefeat inspect STORE --html`` in a process of its own
and records its peak memory. The target: within a minute per 20,000 images on 2 cores, with memory that
does not grow with the store.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def phantom_store(path: Path, samples: int, size: int = 299) -> Path:
    """``samples`` phantoms with their ENH, written piece by piece (never more than one in memory)."""
    from phasefeat import enhance
    from phasefeat.io.assemble import assemble, write_piece
    from phasefeat.tools.phantom import chest_phantom

    findings = (None, "pneumonia", "covid")
    base = [chest_phantom(size, seed=s, dtype="float32", finding=findings[s % 3]) for s in range(64)]
    cxr = np.stack([np.rint(b * 255).astype(np.uint8) for b in base])[..., None]
    enh = np.stack([enhance(b, out="uint8") for b in base])
    rng = np.random.default_rng(0)
    work = path.with_name(path.name + ".parts")
    work.mkdir()
    pieces = []
    for k in range(0, samples, 64):
        m = min(64, samples - k)
        labels = (np.arange(k, k + m) % 3).astype(np.int32)
        sources = np.array([("nih", "ieee", "mhh")[(lab + (i % 5 == 0)) % 3] for i, lab in enumerate(labels)])
        side = rng.integers(512, 3000, m)
        piece = {"labels": labels, "source_path": np.array([f"f{k + i}.png" for i in range(m)]),
                 "patient_id": np.array([f"p{(k + i) // 2}" for i in range(m)]), "source": sources,
                 "sha256": np.array([f"{k + i:064x}" for i in range(m)]),
                 "orig_width": side.astype(np.int32), "orig_height": (side * rng.uniform(0.8, 1.2, m)).astype(np.int32),
                 "orig_mode": np.array(["I;16" if s == "mhh" else "L" for s in sources]),
                 "cxr": cxr[:m], "enh": enh[:m]}
        pieces.append(work / f"piece-{k:07d}.npz")
        write_piece(pieces[-1], piece)
    from phasefeat import PhaseParams

    assemble(path, pieces, shape=(size, size), cxr_dtype="uint8", enh_dtype="uint8",
             class_names=["covid", "normal", "pneumonia"], failures=[],
             attrs={"params_json": PhaseParams().to_json(), "synthetic": "phantoms, repeated"})
    for p in pieces:
        p.unlink()
    work.rmdir()
    return path


def card_row(samples: int) -> dict:
    """Write a store of ``samples`` phantoms, then time its card in a process of its own."""
    with tempfile.TemporaryDirectory(dir=REPO.parent) as tmp:
        store = phantom_store(Path(tmp) / "store.h5", samples)
        size_gb = store.stat().st_size / 1e9
        # A fresh process, so that its peak memory is the card's alone (the page cache is not in it).
        code = ("import resource, sys, time; from phasefeat.io.store import open_store; "
                "from phasefeat.tools.store_card import write_card; t = time.perf_counter(); "
                "s = open_store(sys.argv[1]); write_card(s, sys.argv[2]); "
                "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
        done = subprocess.run([sys.executable, "-c", code, str(store), str(Path(tmp) / "card.html")],
                              capture_output=True, text=True, check=True)
        seconds, peak_mb = map(float, done.stdout.split())
        card_mb = (Path(tmp) / "card.html").stat().st_size / 1e6
    return {"samples": samples, "size": 299, "store_gb": round(size_gb, 2), "card_seconds": seconds,
            "samples_per_second": samples / seconds, "seconds_per_20000": seconds * 20000 / samples,
            "peak_rss_mb": peak_mb, "card_mb": card_mb}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", default="2000,20000", help="store sizes, comma-separated")
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "card-cpu.json")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from benchmarks._record import write_record
    from phasefeat.backend import cpu_model

    rows = [card_row(int(n)) for n in args.samples.split(",")]
    print(f"{'samples':>8} {'store GB':>9} {'card s':>8} {'s per 20,000':>13} {'peak RSS MB':>12} {'card MB':>8}")
    for row in rows:
        print(f"{row['samples']:>8} {row['store_gb']:>9.2f} {row['card_seconds']:>8.1f} "
              f"{row['seconds_per_20000']:>13.1f} {row['peak_rss_mb']:>12.0f} {row['card_mb']:>8.1f}")
    write_record(args.json, "card", cpu_model(), machine={"cores": os.cpu_count()}, rows=rows,
                 note="phasefeat inspect --html in a process of its own, after the store was written (its pages "
                      "may be in the page cache); peak RSS of that process")
    return 0 if all(r["seconds_per_20000"] <= 60 or r["samples"] < 20000 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
