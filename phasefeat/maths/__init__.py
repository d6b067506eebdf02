"""The numerics, written once for an array module (NumPy, or CuPy on a GPU).

filters (radial band-pass banks, Riesz) -> monogenic (per-scale even/odd parts,
LwPA, phase energy, LPE) -> kirsch (the BCCR filter bank) and _cpu_kernels (its
Numba-fused CPU form) -> elea (boundary-constrained dehazing) -> scaling (maps to
[0, 1]) -> features (``enhance``: the three-channel ENH). ``phasefeat.enhance``
and ``phasefeat.monogenic`` are the public entry points.
"""
