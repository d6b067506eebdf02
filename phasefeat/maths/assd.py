"""The alpha-scale-space derivative (ASSD) radial filter and its bandwidth.

Scalar maths only, with no import from the rest of the package:
:mod:`phasefeat.params` validates an ASSD bandwidth with :func:`assd_exponent`,
and :mod:`phasefeat.maths.filters` (which reads the parameters) builds the bank
from :func:`assd`, so both import this module and neither imports the other.
"""

from __future__ import annotations

import functools
import math

import numpy as np

__all__ = ["assd", "assd_bandwidth_octaves", "assd_exponent"]


def _assd_half_points(a: float, alpha: float) -> tuple[float, float]:
    """Roots y1 < 1 < y2 of ``ln y + 1 - y = -(2 alpha / a) ln 2`` (y = x^(2 alpha))."""
    target = -(2 * alpha / a) * math.log(2)

    def f(y):
        return math.log(y) + 1 - y - target

    def bisect(lo, hi):
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            if (f(lo) < 0) == (f(mid) < 0):
                lo = mid
            else:
                hi = mid
        return 0.5 * (lo + hi)

    hi = 2.0
    while f(hi) > 0:
        hi *= 2
    return bisect(1e-300, 1.0), bisect(1.0, hi)


def assd_bandwidth_octaves(a: float, alpha: float) -> float:
    """Half-amplitude bandwidth in octaves of an ASSD filter (spec section 2.3)."""
    y1, y2 = _assd_half_points(a, alpha)
    return (math.log(y2) - math.log(y1)) / (2 * alpha * math.log(2))


@functools.lru_cache(maxsize=64)
def assd_exponent(alpha: float, bandwidth: float) -> float:
    """Exponent ``a`` of an ASSD filter with the given alpha and bandwidth (octaves).

    Solved by bisection on :func:`assd_bandwidth_octaves`, which decreases in
    ``a``. For alpha 0.2 and 4 octaves this gives a = 1.8339.

    Raises
    ------
    ValueError
        When no exponent in [1e-6, 1e6] gives that bandwidth (an ASSD filter with alpha 1
        is at most about 10 octaves wide), instead of returning the end of the bracket.
    """
    lo, hi = 1e-6, 1e6
    for _ in range(200):
        mid = math.sqrt(lo * hi)
        if assd_bandwidth_octaves(mid, alpha) > bandwidth:
            lo = mid
        else:
            hi = mid
    a = math.sqrt(lo * hi)
    if abs(assd_bandwidth_octaves(a, alpha) - bandwidth) > 1e-6 * bandwidth:
        widest, narrowest = assd_bandwidth_octaves(1e-6, alpha), assd_bandwidth_octaves(1e6, alpha)
        raise ValueError(f"an ASSD filter with alpha {alpha:g} spans {narrowest:.3g} to {widest:.3g} octaves; "
                         f"assd_bandwidth {bandwidth:g} is outside (or give assd_exponent itself)")
    return a


def assd(rho: np.ndarray, wavelength: float, alpha: float, a: float) -> np.ndarray:
    """Alpha-scale-space derivative radial filter, peak 1 at ``1 / wavelength``.

    References
    ----------
    .. [1] A. Belaid and D. Boukerroui, Pattern Recognition 47(10), 2014.
    """
    x = rho * wavelength
    return x**a * np.exp((a / (2 * alpha)) * (1 - x ** (2 * alpha)))
