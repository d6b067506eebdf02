"""The CPU path of ``enhance`` stage by stage, beside the time its memory traffic needs on this machine.

    python benchmarks/bench_roofline.py [--size 1024] [--repeats 7] [--baseline REV] [--json PATH]

One core, float32, the default ``qi2021`` parameters, one radiograph (the first of the shared set,
resized; a phantom where it is absent). The bandwidth is measured here, by a large copy (bytes read
plus bytes written per second, the best of the repeats). Each stage's bound is the least traffic it
must make (every input array read once, every output written once) over that bandwidth; the ratio
measured / bound says how far it runs from the memory limit. FFTs are compute-bound on this machine
(ratios well above 1 there are expected); also timed: ``scipy.fft.irfft2`` beside the package's
two-pass inverse (``phasefeat._cpu_fft``).

A second table times each change of the native-resolution work beside what it replaced, on
the same arrays: the earlier revision's own Numba kernels and Kirsch power spectrum (loaded
from git, ``--baseline``), NumPy expressions where the earlier code was one, the filter bank
built as before (complex products, every row). Prints both tables and writes a JSON record.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = REPO.parent / "shared" / "data" / "cxr-real"
DEFAULT_BASELINE = "8f86dc1afbf44415a4d0c313d5004b6f9650b64c"  # as benchmarks/bench_native.py


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1024, help="image side in pixels (1024)")
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per stage; medians (7)")
    parser.add_argument("--source", type=Path, default=DEFAULT_IMAGES,
                        help="folder of radiographs (default: the shared real set; a phantom if absent)")
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help="git revision the changes are timed against")
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "roofline-cpu.json")
    return parser.parse_args(argv)


def median_seconds(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bandwidth(repeats: int) -> float:
    """Bytes moved per second by a 256 MB float32 copy (read + write), best of ``repeats``."""
    import numpy as np

    src = np.ones(64 * 2**20, dtype=np.float32)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(repeats + 1):
        start = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - start)
    return 2 * src.nbytes / best


def pipeline(image):
    """The CPU path's arrays for ``image`` (shape (1, H, W)), stage by stage: what both tables time on."""
    import types

    import numpy as np

    from phasefeat import PhaseParams, _cpu_fft
    from phasefeat.backend import get_backend
    from phasefeat.maths import elea, kirsch, monogenic, scaling
    from phasefeat.maths._cpu_kernels import kernels
    from phasefeat.maths.filters import filter_bank

    a = types.SimpleNamespace(params=PhaseParams(), backend=get_backend("numpy"), fused=kernels())
    params, backend = a.params, a.backend
    a.n, a.h, a.w = image.shape
    a.bank = filter_bank((a.h, a.w), params, np.float32, backend)
    a.spectrum = _cpu_fft.rfft2(image - image.mean())
    a.comps = monogenic.monogenic_components(image, params, backend)
    a.e_sum, a.odd_norm, a.pe = (np.empty(image.shape, np.float32) for _ in range(3))
    a.fused[2](a.comps[0], params.polarity, a.e_sum[0], a.odd_norm[0], a.pe[0])
    a.scaled = scaling.scale_map(a.pe, "energy", params, np)
    a.rho = elea.airlight(a.scaled, params, np)
    a.t_hat = elea.closing(elea.boundary_constraint(a.scaled, a.rho, params, np), params.closing_size,
                           params.closing_border, np)
    a.weights = elea.contextual_weights(a.scaled, params, backend)
    a.power = kirsch.bank_power_spectrum((a.h, a.w), params.meng_compat, np.float32, backend)
    a.transmission = elea.regularize_transmission(a.t_hat, a.weights, params, backend).transmission
    a.x = a.scaled / np.float32(255)
    a.t_spec = _cpu_fft.rfft2(a.t_hat)
    return a


def stages(image, a):
    """``(name, call, bytes)`` of each stage of the CPU path, on the arrays ``a`` of :func:`pipeline`."""
    import numpy as np

    from phasefeat import _cpu_fft, enhance
    from phasefeat.maths import elea, scaling

    params, fused, h, w = a.params, a.fused, a.h, a.w
    plane, half = h * w * 4, h * (w // 2 + 1) * 8  # float32 image, complex64 half spectrum
    lwpa, v = np.empty_like(a.e_sum), np.empty_like(a.t_hat)
    v_spec = a.t_spec.copy()
    exponent = np.empty((8, a.n, h, w), np.float32)
    fused[0](a.x[0], 2 * params.sigma_w, exponent[:, 0])
    exp_out = np.empty_like(exponent)
    planes_in = 7 if params.meng_compat else 8  # Meng's bank repeats mask 0: seven planes are read
    k = len(a.bank)
    return [
        ("forward FFT of the image (rfft2)", lambda: _cpu_fft.rfft2(image), plane + half),
        (f"{k} inverse FFTs of the monogenic bank (product + irfft2)",
         lambda: [_cpu_fft.irfft2(a.spectrum[0] * a.bank[i], s=(h, w), overwrite_x=True) for i in range(k)],
         k * (2 * half + plane)),
        ("phase sums (E, |O|, PE)",
         lambda: fused[2](a.comps[0], params.polarity, a.e_sum[0], a.odd_norm[0], a.pe[0]), (k + 3) * plane),
        ("LwPA = atan2(E, |O|)", lambda: fused[4](a.e_sum[0], a.odd_norm[0], lwpa[0]), 3 * plane),
        ("min-max scaling of one map", lambda: scaling.minmax_255(a.pe, np), 2 * plane),
        ("airlight, boundary constraint, closing",
         lambda: elea.closing(elea.boundary_constraint(a.scaled, elea.airlight(a.scaled, params, np), params, np),
                              params.closing_size, params.closing_border, np), 2 * plane),
        ("Kirsch responses -> weights' exponent", lambda: fused[0](a.x[0], 2 * params.sigma_w, exponent[:, 0]),
         9 * plane),
        (f"exp of the weights ({planes_in} planes)",
         lambda: [np.exp(exponent[i], out=exp_out[i]) for i in range(planes_in)], 2 * planes_in * plane),
        ("BCCR shrink + adjoint (one iteration)",
         lambda: fused[1](a.t_hat[0], a.weights[:, 0], 1 / 8, params.meng_compat, v[0]), (planes_in + 2) * plane),
        ("BCCR rfft2 (one iteration)", lambda: _cpu_fft.rfft2(v), plane + half),
        ("BCCR spectral solve (one iteration)",
         lambda: fused[3](a.t_spec[0], v_spec[0], a.power, np.float32(0.5)), 3 * half + half // 4),
        ("BCCR irfft2 (one iteration)", lambda: _cpu_fft.irfft2(a.t_spec, s=(h, w)), half + plane),
        ("attenuation inverted (ELEA)",
         lambda: elea.invert_attenuation(a.scaled, a.transmission, a.rho, params, np), 3 * plane),
        ("whole enhance (for reference)", lambda: enhance(image[0], dtype="float32"), 4 * plane),
    ]


def baseline_module(rev: str, path: str, folder: Path):
    """A module of the package at ``rev`` that imports nothing from the package, loaded on its own."""
    import importlib.util
    import subprocess

    text = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=REPO, check=True, capture_output=True,
                          text=True).stdout
    file = folder / ("baseline_" + Path(path).name)
    file.write_text(text)
    spec = importlib.util.spec_from_file_location(file.stem, file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def old_filter_bank(shape, params):
    """The bank as the baseline built it: radial filters on every row, complex128 products, one cast."""
    import numpy as np

    from phasefeat.maths.assd import assd
    from phasefeat.maths.filters import butterworth_lowpass, frequency_grid, riesz

    _, _, rho = frequency_grid(shape, params.kovesi_odd_grid)
    lowpass = butterworth_lowpass(rho, *params.lowpass)
    bank = np.stack([assd(rho, wl, params.assd_alpha, params.assd_exponent) * lowpass
                     for wl in params.wavelengths])
    rx, ry = riesz(shape, params.kovesi_odd_grid)
    stacked = np.empty((3 * params.nscale, *bank.shape[1:]), dtype=np.complex128)
    stacked[0::3] = bank
    stacked[1::3] = 1j * bank * rx
    stacked[2::3] = 1j * bank * ry
    return stacked.astype(np.complex64)


def changes(a, rev: str, repeats: int, folder: Path) -> list[dict]:
    """Each change beside what it replaced, on the arrays ``a`` of :func:`pipeline`:
    ``{change, per_image, before_ms, after_ms}``."""
    import types

    import numpy as np
    import scipy.fft

    from phasefeat import _cpu_fft
    from phasefeat.maths import filters, kirsch, scaling

    old = baseline_module(rev, "phasefeat/maths/_cpu_kernels.py", folder).kernels()
    old_kirsch = baseline_module(rev, "phasefeat/maths/kirsch.py", folder)
    new, params, h, w = a.fused, a.params, a.h, a.w
    e_sum, odd_norm, pe, x, t, weights = a.e_sum[0], a.odd_norm[0], a.pe[0], a.x[0], a.t_hat[0], a.weights[:, 0]
    spectrum, bank, power, t_spec = a.spectrum[0], a.bank, a.power, a.t_spec[0]
    v, lwpa, z = np.empty_like(t), np.empty_like(t), np.empty((8, h, w), np.float32)
    v_spec = _cpu_fft.rfft2(v)
    full_spectrum = scipy.fft.fft2(t + 1j * v).astype(np.complex64)
    array_module = types.SimpleNamespace(min=np.min, max=np.max, where=np.where)  # not numpy: the array path
    gamma = np.float32(0.5)
    two_sigma = np.float32(2 * params.sigma_w)

    def old_weights():
        old[0](x, z)
        np.exp(-(z * z) / two_sigma)

    def new_weights():
        new[0](x, 2 * params.sigma_w, z)
        np.exp(z[:4], out=z[:4])
        np.exp(z[5:], out=z[5:])

    pairs = [
        ("BCCR shrink + adjoint (the weights / 8 once, then 6 iterations)", 1,
         lambda: [old[1](t, w8, 1.0, True, v) for w8 in [weights / 8] for _ in range(6)],
         lambda: [new[1](t, weights, 1 / 8, True, v) for _ in range(6)]),
        ("BCCR spectral solve (NumPy expression -> one fused pass)", 6,
         lambda: (gamma * t_spec + v_spec) / (gamma + power),
         lambda: new[3](t_spec, v_spec.copy(), power, gamma)),
        ("contextual weights (Kirsch pass + 3 NumPy passes + exp -> exponent in the Kirsch pass)", 1,
         old_weights, new_weights),
        ("LwPA (numpy.arctan2 -> vectorised atan2)", 1,
         lambda: np.arctan2(e_sum, odd_norm), lambda: new[4](e_sum, odd_norm, lwpa)),
        ("irfft2 of one plane (scipy.fft -> two passes, in place)", 12,
         lambda: scipy.fft.irfft2(t_spec, s=(h, w)), lambda: _cpu_fft.irfft2(t_spec.copy(), s=(h, w),
                                                                            overwrite_x=True)),
        ("monogenic inverse FFTs (one 6-plane irfft2 -> plane by plane)", 1,
         lambda: scipy.fft.irfft2(spectrum[None] * bank, s=(h, w)),
         lambda: [scipy.fft.irfft2(spectrum * bank[k], s=(h, w)) for k in range(len(bank))]),
        ("min-max scaling (NumPy -> one kernel)", 3,
         lambda: scaling.minmax_255(pe[None], array_module),
         lambda: scaling.minmax_255(pe[None], np)),
        ("not adopted: two real inverse FFTs as one complex inverse FFT (its transform alone, no packing)", 1,
         lambda: [_cpu_fft.irfft2(t_spec.copy(), s=(h, w), overwrite_x=True) for _ in range(2)],
         lambda: scipy.fft.ifft2(full_spectrum, overwrite_x=True)),
        ("Kirsch power spectrum for a new shape (8 FFTs -> closed form)", "per shape",
         lambda: old_kirsch._power_spectrum_cached.__wrapped__((h, w), True, "float32", "numpy", None, np),
         lambda: kirsch.power_spectrum((h, w), True).astype(np.float32)),
        ("filter bank for a new shape (every row, complex products -> half the rows, parts)", "per shape",
         lambda: old_filter_bank((h, w), params),
         lambda: filters._filter_bank_cached.__wrapped__((h, w), params, "float32", "numpy", None, np)),
    ]
    rows = []
    for name, per_image, before, after in pairs:
        rows.append({"change": name, "per_image": per_image, "before_ms": 1e3 * median_seconds(before, repeats),
                     "after_ms": 1e3 * median_seconds(after, repeats)})
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, [sorted(os.sched_getaffinity(0))[0]])
    sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]
    import numpy as np
    import scipy.fft
    from bench_features import load_images

    from phasefeat import _cpu_fft
    from phasefeat.backend import cpu_model

    images, source = load_images(args.source, 1, args.size)
    image = images[:1] * np.float32(255)  # on the 0..255 scale the record was measured at
    arrays = pipeline(image)
    bw = bandwidth(args.repeats)
    rows = []
    for name, call, traffic in stages(image, arrays):
        seconds = median_seconds(call, args.repeats)
        bound = traffic / bw
        rows.append({"stage": name, "ms": 1e3 * seconds, "traffic_mb": traffic / 1e6, "bound_ms": 1e3 * bound,
                     "ratio": seconds / bound})
    spectrum = scipy.fft.rfft2(image[0])
    shape = image.shape[1:]
    irfft = {"scipy_irfft2_ms": 1e3 * median_seconds(lambda: scipy.fft.irfft2(spectrum, s=shape), args.repeats),
             "two_pass_irfft2_ms": 1e3 * median_seconds(lambda: _cpu_fft.irfft2(spectrum, s=shape), args.repeats)}
    print(f"enhance stages, float32, qi2021, {args.size}x{args.size} ({source}); one core of {cpu_model()}; "
          f"copy bandwidth {bw / 1e9:.1f} GB/s (read + write); medians of {args.repeats}\n")
    print("| stage | measured ms | least traffic MB | memory bound ms | measured / bound |\n|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['stage']} | {r['ms']:.2f} | {r['traffic_mb']:.1f} | {r['bound_ms']:.2f} | {r['ratio']:.1f} |")
    print(f"\nirfft2 {args.size}x{args.size}: scipy.fft {irfft['scipy_irfft2_ms']:.2f} ms, two-pass "
          f"{irfft['two_pass_irfft2_ms']:.2f} ms")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        saved = changes(arrays, args.baseline, args.repeats, Path(tmp))
    print(f"\nEach change beside what it replaced (baseline {args.baseline[:7]}; same arrays, same core)\n")
    print("| change | times per image | before ms | after ms | saved per image ms |\n|---|---|---:|---:|---:|")
    for r in saved:
        per = r["per_image"]
        gain = f"{(r['before_ms'] - r['after_ms']) * per:.1f}" if isinstance(per, int) else "per new shape"
        print(f"| {r['change']} | {per} | {r['before_ms']:.2f} | {r['after_ms']:.2f} | {gain} |")
    from benchmarks._record import write_record

    write_record(args.json, "roofline", cpu_model(), machine={"cores_used": 1},
                 settings={"size": args.size, "repeats": args.repeats, "source": source, "dtype": "float32",
                           "params": "qi2021 (default)", "baseline": args.baseline},
                 copy_bandwidth_gb_s=bw / 1e9, rows=rows, irfft2=irfft, changes=saved)
    return 0


if __name__ == "__main__":
    sys.exit(main())
