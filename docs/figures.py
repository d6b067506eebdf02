"""Regenerate the documentation figures: ``python docs/figures.py`` (from the repository root)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from phasefeat.tools.figures import atomic_savefig

STAGES = [
    ("raw radiographs", "class folders, CSV or\nCOVIDx labels; PNG, JPEG,\nBMP, TIFF, DICOM",
     "your folder\n(or phasefeat demo-data)"),
    ("phasefeat convert", "decode, grey, fit to 299 px,\nmonogenic filters, ELEA\n(NumPy or CuPy)",
     "imageio, discover,\nmonogenic, elea,\nfeatures, convert"),
    ("HDF5 store", "CXR + ENH per sample,\nlabels, provenance,\nfailures table",
     "store\n(docs/store-format.md)"),
    ("trainer compare", "paired seeds, split,\nstreaming, VGG16,\nCCE / SCCE / ...",
     "trainer: splits, data,\nmodel, losses,\nexperiment"),
    ("report", "tables, paired CIs,\nbit identity, curves,\nconfusion matrices", "trainer.report"),
]


def pipeline(path="docs/img/pipeline.png"):
    fig, ax = plt.subplots(figsize=(13, 3.3), dpi=100)
    ax.set_xlim(0, len(STAGES) * 2.6)
    ax.set_ylim(0, 3.3)
    ax.axis("off")
    for k, (title, what, where) in enumerate(STAGES):
        x = k * 2.6 + 0.15
        ax.add_patch(FancyBboxPatch((x, 1.0), 2.1, 1.9, boxstyle="round,pad=0.05",
                                    fc="#e8f0fb" if k % 2 else "#f4f4f4", ec="#345"))
        ax.text(x + 1.05, 2.6, title, ha="center", va="center", fontsize=10, weight="bold")
        ax.text(x + 1.05, 1.75, what, ha="center", va="center", fontsize=8)
        ax.text(x + 1.05, 0.45, where, ha="center", va="center", fontsize=7, color="#555", style="italic")
        if k:
            ax.add_patch(FancyArrowPatch((x - 0.45, 1.95), (x - 0.02, 1.95), arrowstyle="-|>",
                                         mutation_scale=14, color="#345"))
    ax.text(0.15, 3.2, "where it lives in the code (italic)", fontsize=7, color="#555", va="top")
    fig.tight_layout()
    atomic_savefig(fig, path)
    plt.close(fig)


def elea_steps(path="docs/img/elea-steps-phantom.png"):
    """The ELEA intermediates of the default preset on the built-in phantom."""
    import numpy as np

    from phasefeat import PhaseParams, monogenic
    from phasefeat.backend import get_backend
    from phasefeat.maths.elea import elea
    from phasefeat.tools.phantom import chest_phantom

    params = PhaseParams()
    image = chest_phantom(299, seed=0, dtype="float64")
    maps = monogenic(image[None], params, dtype="float64")
    source = maps.lpe if params.elea_source == "lpe" else maps.phase_energy
    out, d = elea(source, params, get_backend("numpy"), return_details=True)
    panels = [(f"S: scaled {params.elea_source.upper()}", d["scaled"][0], (0, 255)),
              ("t_b: boundary constraint", d["t_b"][0], (0, 1)),
              ("t_hat: closing of t_b", d["t_hat"][0], (0, 1)),
              (f"CXR_T after {d['iterations']} iterations", d["transmission"][0], (0, 1)),
              ("ELEA", out[0], (0, 255))]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6), dpi=100)
    for ax, (title, image_, (lo, hi)) in zip(axes, panels, strict=True):
        ax.imshow(np.asarray(image_), cmap="gray", vmin=lo, vmax=hi)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.suptitle(f"ELEA step by step, preset {params.preset_name()}, synthetic phantom (seed 0)",
                 fontsize=10)
    fig.tight_layout()
    atomic_savefig(fig, path)
    plt.close(fig)


if __name__ == "__main__":
    pipeline()
    elea_steps()
