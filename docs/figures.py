"""Regenerate the documentation figures: ``python docs/figures.py`` (from the repository root)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from phasefeat.figures import atomic_savefig

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


if __name__ == "__main__":
    pipeline()
