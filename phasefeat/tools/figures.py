"""Pictures of the maps: a radiograph beside LwPA, LPE, ELEA and the composite."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..io._atomic import atomic_path

__all__ = ["maps_figure", "atomic_savefig"]

TITLES = {"lwpa": "LwPA (local phase)", "lpe": "LPE (phase energy)", "elea": "ELEA (attenuation)"}


def atomic_savefig(fig, path: str | os.PathLike, **kwargs) -> Path:
    """Save a matplotlib figure so that ``path`` only ever holds a complete file."""
    kwargs.setdefault("format", Path(path).suffix.lstrip(".") or "png")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, **kwargs)
    return Path(path)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def _save_and_close(fig, path, title: str):
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    try:
        return atomic_savefig(fig, path)
    finally:
        _pyplot().close(fig)


def maps_figure(cxr: np.ndarray, enh: np.ndarray, channel_order, path, title: str = ""):
    """Write a one-row figure: CXR, each ENH channel, and the RGB composite.

    Parameters
    ----------
    cxr : ndarray, shape (H, W)
    enh : ndarray, shape (H, W, 3)
        Values in [0, 1] (float) or 0..255 (uint8).
    channel_order : sequence of str
        Names of the ENH channels, as ``PhaseParams.channel_order``.
    path : path-like
        PNG to write (atomically).
    """
    plt = _pyplot()
    enh = enh.astype(np.float32) / (255 if enh.dtype == np.uint8 else 1)
    panels = [("CXR (input)", cxr, "gray")]
    panels += [(TITLES.get(name, name), enh[..., c], "gray") for c, name in enumerate(channel_order)]
    panels.append(("ENH composite (RGB = " + ", ".join(channel_order) + ")", enh, None))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6), dpi=100)
    for ax, (label, image, cmap) in zip(axes, panels, strict=True):
        ax.imshow(image, cmap=cmap)
        ax.set_title(label, fontsize=9)
        ax.axis("off")
    return _save_and_close(fig, path, title)


def atomic_save_png(array: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a uint8 ``(H, W)`` or ``(H, W, 3)`` array as a PNG, atomically."""
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(array)).save(tmp, format="PNG")
    return Path(path)


def preview_figure(rows, channel_order, path, title: str = ""):
    """A grid in the style of the study's Fig. 1: one row per sample.

    Parameters
    ----------
    rows : list of (label, cxr, enh)
        ``cxr`` ``(H, W)`` or ``(H, W, 1)``; ``enh`` ``(H, W, 3)`` (uint8 or float in [0, 1]).
    channel_order : sequence of str
    path : path-like
        PNG to write (atomically).
    """
    plt = _pyplot()
    heads = ["CXR"] + [TITLES.get(n, n) for n in channel_order] + ["ENH composite"]
    fig, axes = plt.subplots(len(rows), 5, figsize=(13, 2.8 * len(rows)), dpi=100, squeeze=False)
    for r, (label, cxr, enh) in enumerate(rows):
        enh = enh.astype(np.float32) / (255 if enh.dtype == np.uint8 else 1)
        cxr = np.squeeze(cxr)
        images = [cxr] + [enh[..., c] for c in range(3)] + [np.clip(enh, 0, 1)]
        for c, image in enumerate(images):
            ax = axes[r, c]
            ax.imshow(image, cmap="gray" if c < 4 else None)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(heads[c], fontsize=9)
        axes[r, 0].set_ylabel(label, fontsize=8)
    return _save_and_close(fig, path, title)
