"""NumPy arrays that count their own memory traffic, as un-fused GPU array code would move it.

Each ufunc call, reduction, copy or array function on a :class:`CountedArray`
inside :func:`metering` adds one kernel launch and the bytes it reads and
writes to the active :class:`WorkMeter`; views cost nothing. This is how CuPy
executes array code that is not fused, so the count is the memory traffic of
phasefeat's CuPy path, measured without a GPU (``estimate_gpu.py``).
"""

from __future__ import annotations

import collections
import contextlib
import types

import numpy as np

#: Passes over the complex data of one batched 2-D FFT (one kernel per axis).
FFT_PASSES = 2

# ---------------------------------------------------------------------------
# Arrays that count their own memory traffic
# ---------------------------------------------------------------------------


class WorkMeter:
    """Bytes read + written and kernel launches, per operation name."""

    def __init__(self):
        self.bytes = collections.Counter()
        self.kernels = collections.Counter()

    def add(self, name: str, nbytes: int, kernels: int = 1) -> None:
        self.bytes[name] += int(nbytes)
        self.kernels[name] += kernels

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes.values())

    @property
    def total_kernels(self) -> int:
        return sum(self.kernels.values())


_METER: WorkMeter | None = None
# Functions that only make views or ask about arrays: no kernel, no traffic.
_NO_TRAFFIC = {"reshape", "swapaxes", "moveaxis", "transpose", "squeeze", "expand_dims",
               "broadcast_to", "result_type", "shape", "ndim", "empty_like", "may_share_memory",
               "shares_memory"}


def _plain(value):
    if isinstance(value, CountedArray):
        return value.view(np.ndarray)
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _wrap(value):
    if type(value) is np.ndarray:
        return value.view(CountedArray)
    if isinstance(value, (list, tuple)):
        return type(value)(_wrap(v) for v in value)
    return value


def _nbytes(value) -> int:
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, (list, tuple)):
        return sum(_nbytes(v) for v in value)
    if isinstance(value, dict):
        return sum(_nbytes(v) for v in value.values())
    return 0


class CountedArray(np.ndarray):
    """An ndarray whose operations report their traffic to the active meter.

    Each ufunc call, reduction or array function counts as one kernel that
    reads its array inputs and writes its output once, which is how CuPy
    executes un-fused array code.
    """

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        args, kw = _plain(inputs), _plain(kwargs)
        result = getattr(ufunc, method)(*args, **kw)
        if _METER is not None:
            _METER.add(f"{ufunc.__name__}.{method}" if method != "__call__" else ufunc.__name__,
                       _nbytes(args) + _nbytes(result))
        return _wrap(result)

    def __array_function__(self, func, types, args, kwargs):
        args, kw = _plain(args), _plain(kwargs)
        result = func(*args, **kw)
        if _METER is not None and func.__name__ not in _NO_TRAFFIC:
            _METER.add(func.__name__, _nbytes(args) + _nbytes(kw) + _nbytes(result))
        return _wrap(result)

    def __setitem__(self, key, value):
        value = _plain(value)
        super().__setitem__(key, value)
        if _METER is not None:
            written = np.asarray(self.view(np.ndarray)[key]).nbytes
            _METER.add("setitem", _nbytes(value) + written)

    def astype(self, dtype, *args, copy=True, **kwargs):
        result = super().astype(dtype, *args, copy=copy, **kwargs)
        if _METER is not None and not np.shares_memory(_plain(result), _plain(self)):
            _METER.add("astype", self.nbytes + result.nbytes)
        return result


class CountingFFT:
    """``rfft2``/``irfft2`` counted as FFT_PASSES passes over the complex data."""

    @staticmethod
    def _count(name, real, spectrum):
        if _METER is not None:
            _METER.add(name, real.nbytes + spectrum.nbytes * (2 * FFT_PASSES - 1), FFT_PASSES)

    def rfft2(self, x, s=None, axes=(-2, -1)):
        x = _plain(x)
        out = np.fft.rfft2(x, s=s, axes=axes).astype(np.result_type(x.dtype, np.complex64))
        self._count("rfft2", x, out)
        return _wrap(out)

    def irfft2(self, x, s=None, axes=(-2, -1)):
        x = _plain(x)
        out = np.fft.irfft2(x, s=s, axes=axes).astype(np.result_type(x.real.dtype, np.float32))
        self._count("irfft2", out, x)
        return _wrap(out)


class CountingNumpy(types.ModuleType):
    """``numpy`` whose allocating constructors return counted arrays."""

    #: What the CuPy backend asks of its module besides arrays (the device id of its caches).
    cuda = types.SimpleNamespace(Device=lambda: types.SimpleNamespace(id=0))

    def __init__(self):
        super().__init__("counting_numpy")

    def __getattr__(self, name):
        return getattr(np, name)

    def empty(self, *args, **kwargs):
        return _wrap(np.empty(*args, **kwargs))


@contextlib.contextmanager
def metering():
    """Collect the traffic of counted arrays inside the block into a WorkMeter."""
    global _METER
    previous, _METER = _METER, WorkMeter()
    try:
        yield _METER
    finally:
        _METER = previous




class CountedGpuKernels:
    """The fused CUDA kernels of ``phasefeat.maths._gpu_kernels``, computed with NumPy and counted as
    one launch each that reads its inputs and writes its outputs once (their design)."""

    def accepts(self, array) -> bool:
        return True

    def shrink_adjoint(self, t, weights, scale, meng_compat, out):
        from phasefeat.maths import kirsch

        t, weights, out = _plain(t), _plain(weights), _plain(out)
        shrunk = kirsch.shrink(kirsch.correlate_bank(t, meng_compat, np), weights * weights.dtype.type(scale), np)
        out[...] = kirsch.adjoint_bank(shrunk, meng_compat, np)
        read = weights.nbytes * (7 if meng_compat else 8) // 8  # Meng's bank never reads plane 4
        if _METER is not None:
            _METER.add("fused shrink_adjoint", t.nbytes + read + out.nbytes)

    def spectral_solve(self, t_hat_spec, v_spec, power, gamma):
        t_hat_spec, v_spec, power = _plain(t_hat_spec), _plain(v_spec), _plain(power)
        gamma = power.dtype.type(gamma)
        v_spec[...] = (gamma * t_hat_spec + v_spec) / (gamma + power)
        if _METER is not None:
            _METER.add("fused spectral_solve", t_hat_spec.nbytes + 2 * v_spec.nbytes + power.nbytes)

    def weights(self, x, two_sigma, meng_compat, out):
        from phasefeat.maths import kirsch

        x, out = _plain(x), _plain(out)
        z = kirsch.correlate_bank(x, meng_compat, np)
        out[...] = np.exp(-(z * z) / x.dtype.type(two_sigma))
        if _METER is not None:
            _METER.add("fused weights", x.nbytes + out.nbytes)
