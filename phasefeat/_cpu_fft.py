"""The CPU's FFTs: ``scipy.fft`` (pocketfft), with a faster two-dimensional real inverse.

``scipy.fft.irfft2`` runs its complex pass over the rows' axis out of place into a
fresh array; run in place on one copy, then followed by the real pass along the last
axis, the same arithmetic gives the same bits in less time (both timed side by side at
1024 x 1024 in ``benchmarks/results/roofline-cpu.json``).
Only the names the maths use are here.
"""

from __future__ import annotations

import scipy.fft

__all__ = ["rfft2", "irfft2"]

rfft2 = scipy.fft.rfft2


def irfft2(x, s, overwrite_x=False):
    """Inverse of :func:`rfft2` over the last two axes, ``s = (H, W)`` the real shape.

    With ``overwrite_x`` the spectrum ``x`` may be destroyed (no copy is made).

    Both passes unscaled, then one product with ``1 / (H W)``: pocketfft scales the
    last pass's output by the same factor, so this equals
    ``scipy.fft.irfft2(x, s=s)`` bit for bit (tests/test_backend.py).
    """
    if x.shape[-2] != s[0]:
        return scipy.fft.irfft2(x, s=s, overwrite_x=overwrite_x)  # a cropped or padded rows' axis: not the maths' case
    columns = scipy.fft.ifft(x if overwrite_x else x.copy(), axis=-2, norm="forward", overwrite_x=True)
    out = scipy.fft.irfft(columns, n=s[1], axis=-1, norm="forward", overwrite_x=True)
    out *= out.dtype.type(1.0 / (s[0] * s[1]))
    return out
