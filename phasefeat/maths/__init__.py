"""The numerics, written once for an array module (NumPy, or CuPy on a GPU).

assd (the ASSD filter's exponent and bandwidth, scalar maths) -> filters (radial
band-pass banks, Riesz) -> monogenic (per-scale even/odd parts, LwPA, phase energy,
LPE) -> kirsch (the BCCR filter bank) -> elea (boundary-constrained dehazing) ->
scaling (maps to [0, 1]) -> features (``enhance``: the three-channel ENH).
``phasefeat.enhance`` and ``phasefeat.monogenic`` are the public entry points.

Fused kernels, where the array code would make many passes: _cpu_kernels (Numba, the
CPU path) and _gpu_kernels (Numba's CUDA target, the CuPy path), both built on the
per-pixel arithmetic of _pixel.
"""
