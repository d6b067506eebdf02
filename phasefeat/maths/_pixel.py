"""Per-pixel arithmetic shared by the CPU kernels (Numba) and the CUDA kernels (Numba's CUDA target).

Plain Python functions of scalars: :mod:`phasefeat.maths._cpu_kernels` registers them as
inlinable for its loops, :mod:`phasefeat.maths._gpu_kernels` compiles them as device functions,
so each formula is written once for both targets.
"""

from __future__ import annotations

__all__ = ["soft", "solved"]


def soft(z, th):
    """Soft threshold ``sign(z) max(|z| - th, 0)``, as ``z - clamp(z, -th, th)`` for ``th >= 0``:
    branch-free, so a loop of it vectorises, in float32 as in float64."""
    return z - min(max(z, -th), th)


def solved(a, b, gamma, power, one):
    """``(gamma a + b) / (gamma + power)`` for complex ``a``, ``b`` and real ``gamma``, ``power``,
    written as NumPy evaluates it (a complex over a real is a product with the real's inverse).

    ``one`` is 1 in the real type to compute in: a literal would widen float32 to float64.
    """
    inv = one / (gamma + power)
    return complex((gamma * a.real + b.real) * inv, (gamma * a.imag + b.imag) * inv)
