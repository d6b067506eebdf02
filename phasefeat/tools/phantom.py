"""Synthetic, radiograph-like test images (no patient data; clearly synthetic).

Used by the demo, the benchmarks and the tests where the shared real
radiographs are absent. The picture is a chest seen front-on: a soft-tissue
body, two darker lung fields crossed by rib arcs, a heart shadow, a spine and
diaphragm domes, blurred and with film-like noise. ``finding`` adds what the
demo's classes need: a dense lobar consolidation in one lung (pneumonia), or
bilateral, peripheral, hazy opacities (COVID-19).
"""

from __future__ import annotations

import numpy as np

__all__ = ["chest_phantom", "FINDINGS"]

FINDINGS = (None, "normal", "pneumonia", "covid")


def _smooth(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur via the FFT (periodic; fine for a synthetic picture)."""
    h, w = image.shape
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    gain = np.exp(-2 * (np.pi * sigma) ** 2 * (fx**2 + fy**2))
    return np.fft.irfft2(np.fft.rfft2(image) * gain, s=image.shape)


def _blob(x, y, cx, cy, rx, ry, angle=0.0):
    c, s = np.cos(angle), np.sin(angle)
    u, v = (x - cx) * c + (y - cy) * s, -(x - cx) * s + (y - cy) * c
    return (u / rx) ** 2 + (v / ry) ** 2


def _pneumonia(x, y, lungs, rng):
    """A dense lobar consolidation filling part of one lung, with a sharp fissure edge."""
    side = rng.integers(2)
    cx, rx, ry = lungs[side]
    lung = _blob(x, y, cx, 0.47, rx, ry) < 1
    top = 0.45 + rng.uniform(-0.08, 0.1)
    lobe = lung & (y > top + 0.05 * (x - cx)) & (_blob(x, y, cx, top + 0.18, rx * 1.1, 0.25) < 1)
    return lobe.astype(np.float64) * rng.uniform(0.28, 0.4), 0.006


def _covid(x, y, lungs, rng):
    """Several faint, blurred, peripheral opacities in both lungs (ground glass)."""
    out = np.zeros_like(x)
    for side, (cx, rx, ry) in enumerate(lungs):
        lung = _blob(x, y, cx, 0.47, rx, ry) < 1
        for _ in range(rng.integers(3, 6)):
            edge = cx + (1 if side else -1) * rx * rng.uniform(0.45, 0.85)
            cy = 0.47 + ry * rng.uniform(-0.2, 0.75)
            patch = _blob(x, y, edge, cy, rng.uniform(0.03, 0.06), rng.uniform(0.04, 0.09),
                          rng.uniform(0, np.pi)) < 1
            out += (patch & lung) * rng.uniform(0.12, 0.2)
    return out, 0.018


def chest_phantom(shape: int | tuple[int, int] = 299, seed: int = 0, dtype: str = "uint8",
                  finding: str | None = None, mean_level: float | None = None) -> np.ndarray:
    """Return a synthetic chest-radiograph-like grey image.

    Parameters
    ----------
    shape : int or (int, int)
        Output size; an int gives a square image.
    seed : int
        Seed of the random anatomy jitter, finding and noise; same seed, same image.
    dtype : {"uint8", "uint16", "float32", "float64"}
        Output dtype; integer outputs use their full range.
    finding : {None, "normal", "pneumonia", "covid"}
        ``"pneumonia"`` adds a lobar consolidation in one lung, ``"covid"``
        bilateral peripheral hazy opacities; None and ``"normal"`` add nothing.
    mean_level : float, optional
        Set the image's mean grey level (in [0, 1]) by a gamma-free affine
        exposure change, so the mean carries no information about the finding.

    Returns
    -------
    ndarray, shape (H, W)
        Bright = dense (bone white), as a radiograph is displayed.
    """
    if finding not in FINDINGS:
        raise ValueError(f"finding must be one of {FINDINGS}, got {finding!r}")
    h, w = (shape, shape) if isinstance(shape, int) else shape
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    y, x = y / h, x / w

    def jitter(scale):
        return rng.normal(0, scale)

    img = np.full((h, w), 0.08)
    body = _blob(x, y, 0.5, 0.58, 0.46 + jitter(0.01), 0.62) < 1
    img[body] = 0.55
    lungs = []
    for side in (-1, 1):
        cx = 0.5 + side * (0.2 + jitter(0.01))
        rx, ry = 0.15 + jitter(0.01), 0.32 + jitter(0.01)
        lungs.append((cx, rx, ry))
        lung = _blob(x, y, cx, 0.47, rx, ry) < 1
        img[lung] = 0.22
        for k in range(9):  # posterior rib arcs
            cy = 0.2 + 0.075 * k + jitter(0.004)
            arc = np.abs(y - (cy + 1.6 * (x - cx) ** 2)) < 0.009
            img[arc & lung] += 0.16
    heart = _blob(x, y, 0.55, 0.62, 0.14 + jitter(0.01), 0.16) < 1
    img[heart] = np.maximum(img[heart], 0.6)
    img[(np.abs(x - 0.5) < 0.035) & body] += 0.2  # spine
    diaphragm = y > 0.78 + 0.05 * np.cos(np.pi * (x - 0.5) / 0.25)
    img[diaphragm & body] = np.maximum(img[diaphragm & body], 0.62)
    img = _smooth(img, sigma=0.004 * max(h, w))
    if finding in ("pneumonia", "covid"):
        extra, blur = (_pneumonia if finding == "pneumonia" else _covid)(x, y, lungs, rng)
        img += _smooth(extra, sigma=blur * max(h, w))
    img += _smooth(rng.normal(0, 0.05, (h, w)), 1.0) + rng.normal(0, 0.01, (h, w))
    img = np.clip((img - img.min()) / (img.max() - img.min()), 0, 1)
    if mean_level is not None:
        # Affine exposure change towards the requested mean, kept inside [0, 1].
        m = img.mean()
        gain = min(mean_level / m, (1 - mean_level) / (1 - m)) if 0 < m < 1 else 1.0
        img = np.clip(mean_level + gain * (img - m), 0, 1)
    if dtype in ("uint8", "uint16"):
        top = np.iinfo(dtype).max
        return np.rint(img * top).astype(dtype)
    return img.astype(dtype)
