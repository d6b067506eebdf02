"""Synthetic, radiograph-like test images (no patient data; clearly synthetic).

Used by the demo, the benchmarks and the tests where the shared real
radiographs are absent. The picture is a chest seen front-on: a soft-tissue
body, two darker lung fields crossed by rib arcs, a heart shadow, a spine and
diaphragm domes, blurred and with film-like noise.
"""

from __future__ import annotations

import numpy as np

__all__ = ["chest_phantom"]


def _smooth(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur via the FFT (periodic; fine for a synthetic picture)."""
    h, w = image.shape
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    gain = np.exp(-2 * (np.pi * sigma) ** 2 * (fx**2 + fy**2))
    return np.fft.irfft2(np.fft.rfft2(image) * gain, s=image.shape)


def chest_phantom(shape: int | tuple[int, int] = 299, seed: int = 0,
                  dtype: str = "uint8") -> np.ndarray:
    """Return a synthetic chest-radiograph-like grey image.

    Parameters
    ----------
    shape : int or (int, int)
        Output size; an int gives a square image.
    seed : int
        Seed of the random anatomy jitter and noise; same seed, same image.
    dtype : {"uint8", "uint16", "float32", "float64"}
        Output dtype; integer outputs use their full range.

    Returns
    -------
    ndarray, shape (H, W)
        Bright = dense (bone white), as a radiograph is displayed.
    """
    h, w = (shape, shape) if isinstance(shape, int) else shape
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    y, x = y / h, x / w
    jitter = lambda scale: rng.normal(0, scale)  # noqa: E731

    img = np.full((h, w), 0.08)
    body = ((x - 0.5) / (0.46 + jitter(0.01))) ** 2 + ((y - 0.58) / 0.62) ** 2 < 1
    img[body] = 0.55
    for side in (-1, 1):
        cx = 0.5 + side * (0.2 + jitter(0.01))
        lung = ((x - cx) / (0.15 + jitter(0.01))) ** 2 + ((y - 0.47) / (0.32 + jitter(0.01))) ** 2 < 1
        img[lung] = 0.22
        for k in range(9):  # posterior rib arcs
            cy = 0.2 + 0.075 * k + jitter(0.004)
            arc = np.abs(y - (cy + 1.6 * (x - cx) ** 2)) < 0.009
            img[arc & lung] += 0.16
    heart = ((x - 0.55) / (0.14 + jitter(0.01))) ** 2 + ((y - 0.62) / 0.16) ** 2 < 1
    img[heart] = np.maximum(img[heart], 0.6)
    img[(np.abs(x - 0.5) < 0.035) & body] += 0.2  # spine
    diaphragm = y > 0.78 + 0.05 * np.cos(np.pi * (x - 0.5) / 0.25)
    img[diaphragm & body] = np.maximum(img[diaphragm & body], 0.62)
    img = _smooth(img, sigma=0.004 * max(h, w))
    img += _smooth(rng.normal(0, 0.05, (h, w)), 1.0) + rng.normal(0, 0.01, (h, w))
    img = np.clip((img - img.min()) / (img.max() - img.min()), 0, 1)
    if dtype in ("uint8", "uint16"):
        top = np.iinfo(dtype).max
        return np.rint(img * top).astype(dtype)
    return img.astype(dtype)
