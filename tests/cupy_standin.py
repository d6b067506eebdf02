"""A CuPy stand-in for the test suite: NumPy underneath, CuPy's rules on top.

phasefeat's array code runs unchanged on CuPy; without a GPU that path would never run.
This module makes a ``cupy`` module whose arrays hold NumPy arrays but refuse what
CuPy refuses, so that CI exercises the CuPy branches of the product (the backend named
``cupy``, its chunk size, cache branches, device round trips) and catches NumPy-only
idioms before a GPU does. It enforces, as CuPy 14 does:

* **no implicit host transfer**: ``np.asarray(x)``, ``x.__array__()``, a NumPy array
  mixed into a ufunc or function with a device array, and ``float(x)`` / ``int(x)`` of an
  array of more than one element raise ``TypeError``; ``x.get()`` and ``cupy.asnumpy``
  are the way to the host, ``cupy.asarray`` the way to the device;
* **only CuPy's names**: module functions, ``cupy.fft`` functions and ``ndarray``
  attributes that CuPy 14.2 does not have raise ``AttributeError``
  (``tests/data/cupy-api.json``, read from the installed package; regenerate with
  ``python tests/cupy_standin.py --dump-api`` where CuPy is installed; no GPU needed);
* **reductions give 0-d arrays**, not scalars; ``ndarray.flags`` has no ``writeable``;
* **inverse real FFTs take Hermitian input only**: on the self-conjugate bins of a half
  spectrum (DC and, for even lengths, Nyquist) NumPy silently drops what is not
  Hermitian, cuFFT does not promise to; the stand-in raises ``ValueError`` there, so it
  zeroes nothing that cuFFT would not (``phasefeat.maths.filters.riesz``).

What it cannot show: cuFFT's rounding, GPU memory, speed, streams, kernel compilation,
and functions that exist in CuPy but behave differently there. Only a real GPU shows those
(``benchmarks/gpu_check.py``).
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
from numpy.lib.mixins import NDArrayOperatorsMixin

_API = json.loads((Path(__file__).resolve().parent / "data" / "cupy-api.json").read_text())
MODULE_NAMES = frozenset(_API["cupy"])
FFT_NAMES = frozenset(_API["fft"])
ARRAY_NAMES = frozenset(_API["ndarray"])
DEVICE = "CuPy stand-in (NumPy on the CPU)"

_IMPLICIT = ("Implicit conversion to a NumPy array is not allowed. Please use `.get()` to construct a "
             "NumPy array explicitly.")


def _host_refused(where: str) -> TypeError:
    return TypeError(f"Unsupported type <class 'numpy.ndarray'> in {where}: a host array where CuPy needs a "
                     "device array (move it with cupy.asarray first)")


def _unwrap(value, where: str, host_ok: bool = False):
    """Device arrays to their NumPy data; host arrays (other than 0-d) refused unless ``host_ok``."""
    if isinstance(value, ndarray):
        return value._a
    if isinstance(value, np.ndarray):
        if host_ok or value.ndim == 0:
            return value
        raise _host_refused(where)
    if isinstance(value, tuple):
        return tuple(_unwrap(v, where, host_ok) for v in value)
    if isinstance(value, list):
        return [_unwrap(v, where, host_ok) for v in value]
    if isinstance(value, dict):
        return {k: _unwrap(v, where, host_ok) for k, v in value.items()}
    return value


def _wrap(value):
    """NumPy results back to device arrays; scalars of reductions become 0-d arrays, as in CuPy."""
    if isinstance(value, np.ndarray):
        return ndarray(value)
    if isinstance(value, np.generic):
        return ndarray(np.asarray(value))
    if isinstance(value, tuple):
        return tuple(_wrap(v) for v in value)
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


class _Flags:
    """CuPy's flags: contiguity and ownership only (no ``writeable``)."""

    __slots__ = ("c_contiguous", "f_contiguous", "owndata")

    def __init__(self, flags):
        self.c_contiguous, self.f_contiguous = flags.c_contiguous, flags.f_contiguous
        self.owndata = flags.owndata

    def __getitem__(self, key):
        return getattr(self, {"C_CONTIGUOUS": "c_contiguous", "F_CONTIGUOUS": "f_contiguous",
                              "OWNDATA": "owndata"}[key])


class ndarray(NDArrayOperatorsMixin):
    """A device array of the stand-in: a NumPy array that refuses implicit host conversion."""

    __slots__ = ("_a",)
    __array_priority__ = 100

    def __init__(self, array: np.ndarray):
        if not isinstance(array, np.ndarray):
            raise TypeError(f"the stand-in wraps NumPy arrays, got {type(array).__name__}")
        self._a = array

    # -- the host boundary -------------------------------------------------------------------------------
    def __array__(self, dtype=None, copy=None):
        raise TypeError(_IMPLICIT)

    def get(self, stream=None, order="C", out=None, blocking=True):
        """Device to host: a NumPy copy."""
        if out is not None:
            out[...] = self._a
            return out
        return np.array(self._a, order=order)

    def _scalar(self, convert):
        if self._a.size != 1:
            raise TypeError("only length-1 arrays can be converted to Python scalars")
        return convert(self._a.reshape(-1)[0])

    def __float__(self):
        return self._scalar(float)

    def __int__(self):
        return self._scalar(int)

    def __complex__(self):
        return self._scalar(complex)

    def __index__(self):
        if self._a.ndim != 0 or self._a.dtype.kind not in "iu":
            raise TypeError("only integer scalar arrays can be converted to a scalar index")
        return int(self._a)

    def __bool__(self):
        if self._a.size != 1:
            raise ValueError("The truth value of an array with more than one element is ambiguous.")
        return bool(self._a.reshape(-1)[0])

    # -- NumPy protocols: CuPy implements them for device arrays only ---------------------------------------
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        try:
            args = _unwrap(inputs, f"numpy.{ufunc.__name__}")
        except TypeError:
            return NotImplemented
        kwargs = dict(kwargs)
        out = kwargs.pop("out", None)
        try:
            kwargs = _unwrap(kwargs, f"numpy.{ufunc.__name__}")
            if out is not None:
                kwargs["out"] = _unwrap(tuple(out), f"numpy.{ufunc.__name__}")
        except TypeError:
            return NotImplemented
        result = getattr(ufunc, method)(*args, **kwargs)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _wrap(result)

    def __array_function__(self, func, types_, args, kwargs):
        if func.__name__ not in MODULE_NAMES:
            return NotImplemented  # NumPy then raises TypeError, as with CuPy
        return _wrap(func(*_unwrap(args, f"numpy.{func.__name__}"),
                          **_unwrap(kwargs, f"numpy.{func.__name__}")))

    def __dlpack__(self, *args, **kwargs):
        return self._a.__dlpack__(*args, **kwargs)

    def __dlpack_device__(self):
        return self._a.__dlpack_device__()

    # -- attributes ----------------------------------------------------------------------------------------
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: _Flags(self._a.flags))
    T = property(lambda self: ndarray(self._a.T))

    @property
    def real(self):
        return _wrap(self._a.real)

    @property
    def imag(self):
        return _wrap(self._a.imag)

    @property
    def device(self):
        return _Device(0)

    def __getattr__(self, name):
        if name.startswith("__") or name not in ARRAY_NAMES or not hasattr(np.ndarray, name):
            raise AttributeError(f"'cupy.ndarray' object has no attribute {name!r} (not in CuPy 14.2)")
        method = getattr(self._a, name)

        def call(*args, **kwargs):
            return _wrap(method(*_unwrap(args, f"ndarray.{name}"), **_unwrap(kwargs, f"ndarray.{name}")))

        return call

    # -- indexing ------------------------------------------------------------------------------------------
    def __getitem__(self, key):
        result = self._a[_unwrap(key, "indexing", host_ok=True)]
        return _wrap(result)

    def __setitem__(self, key, value):
        self._a[_unwrap(key, "indexing", host_ok=True)] = _unwrap(value, "assignment", host_ok=True)

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (_wrap(row) for row in self._a)

    def __repr__(self):
        return f"cupy-standin.{self._a!r}"


ndarray.__module__ = "cupy._core.core"  # what phasefeat.backend.is_cupy_array looks at


class _Ufunc:
    """A NumPy ufunc that takes and gives device arrays only."""

    def __init__(self, ufunc):
        self._ufunc = ufunc
        self.__name__ = ufunc.__name__

    def _call(self, func, args, kwargs):
        where = f"cupy.{self.__name__}"
        kwargs = dict(kwargs)
        out = kwargs.pop("out", None)
        kwargs = _unwrap(kwargs, where)
        if out is not None:
            kwargs["out"] = _unwrap(out if isinstance(out, tuple) else (out,), where)
        result = func(*_unwrap(args, where), **kwargs)
        return out if out is not None else _wrap(result)

    def __call__(self, *args, **kwargs):
        return self._call(self._ufunc, args, kwargs)

    def __getattr__(self, name):
        attr = getattr(self._ufunc, name)
        if name in ("reduce", "accumulate", "outer", "reduceat"):
            return lambda *args, **kwargs: self._call(attr, args, kwargs)
        return attr


def _function(func, name: str):
    def call(*args, **kwargs):
        return _wrap(func(*_unwrap(args, f"cupy.{name}"), **_unwrap(kwargs, f"cupy.{name}")))

    call.__name__ = name
    return call


def _check_hermitian(spectrum: np.ndarray, n_last: int, axes) -> None:
    """Refuse a half spectrum whose self-conjugate bins are not Hermitian (see the module docstring)."""
    axes = [a % spectrum.ndim for a in axes]
    last, others = axes[-1], axes[:-1]
    columns = [0] + ([n_last // 2] if n_last % 2 == 0 else [])
    single = spectrum.dtype == np.complex64
    rtol, atol = (1e-4, 1e-6) if single else (1e-9, 1e-13)
    floor = atol * float(np.abs(spectrum).max(initial=0.0))
    for c in columns:
        bins = np.take(spectrum, [c], axis=last)
        mirrored = bins
        for axis in others:
            size = bins.shape[axis]
            mirrored = np.take(mirrored, (-np.arange(size)) % size, axis=axis)
        mirrored = np.conj(mirrored)
        error = np.abs(bins - mirrored)
        bound = rtol * (np.abs(bins) + np.abs(mirrored)) + floor
        if (error > bound).any():
            which = "DC" if c == 0 else "Nyquist"
            raise ValueError(f"irfft of a spectrum that is not Hermitian on its {which} bins (worst "
                             f"{float(error.max()):.3g}): NumPy drops the imaginary part there, cuFFT does "
                             "not promise to; zero the filter there (phasefeat.maths.filters.riesz)")


class _FFT:
    """``cupy.fft``: NumPy's FFTs (same signatures as CuPy's; float32 stays complex64)."""

    def __getattr__(self, name):
        if name not in FFT_NAMES or not hasattr(np.fft, name):
            raise AttributeError(f"module 'cupy.fft' has no attribute {name!r} (not in CuPy 14.2)")
        func = getattr(np.fft, name)
        forward = _function(func, f"fft.{name}")
        if name not in ("irfft", "irfft2", "irfftn"):
            return forward

        def inverse(a, *args, **kwargs):
            import inspect

            data = _unwrap(a, f"cupy.fft.{name}")
            bound = inspect.signature(func).bind(data, *args, **kwargs)
            bound.apply_defaults()
            given = bound.arguments
            if name == "irfft":
                axes, n_last = (given["axis"],), given["n"]
            else:
                axes = given["axes"] if given["axes"] is not None else tuple(range(-data.ndim, 0))
                n_last = given["s"][-1] if given["s"] is not None else None
            if n_last is None:
                n_last = 2 * (data.shape[axes[-1]] - 1)
            _check_hermitian(data, n_last, axes)
            return forward(a, *args, **kwargs)

        return inverse


class _Device:
    def __init__(self, device=0):
        self.id = int(device or 0)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


class _Stream:
    def synchronize(self):
        return None


class _Runtime:
    @staticmethod
    def getDeviceProperties(device):
        return {"name": DEVICE.encode(), "totalGlobalMem": 0}


class _Cuda:
    Device = _Device
    runtime = _Runtime()

    @staticmethod
    def get_current_stream():
        return _Stream()


class _CupyModule(types.ModuleType):
    """The stand-in ``cupy`` module: explicit transfers, else NumPy's functions on device arrays."""

    def __getattr__(self, name):
        if name.startswith("__") or name not in MODULE_NAMES:
            raise AttributeError(f"module 'cupy' has no attribute {name!r} (not in CuPy 14.2)")
        if not hasattr(np, name):
            raise AttributeError(f"cupy.{name} exists in CuPy but not in the stand-in (NumPy lacks it)")
        value = getattr(np, name)
        if isinstance(value, np.ufunc):
            return _Ufunc(value)
        if isinstance(value, type) or not callable(value):
            return value  # dtypes (cupy.float32 is numpy.float32), constants
        return _function(value, name)


def _asarray(a, dtype=None, order=None, *, blocking=False):
    if isinstance(a, ndarray):
        return a if dtype is None or a.dtype == np.dtype(dtype) else ndarray(a._a.astype(dtype))
    return ndarray(np.array(_unwrap(a, "cupy.asarray", host_ok=True), dtype=dtype, order=order or "K",
                            copy=True))


def _array(a, dtype=None, copy=True, order="K", ndmin=0, **kwargs):
    data = a._a if isinstance(a, ndarray) else _unwrap(a, "cupy.array", host_ok=True)
    return ndarray(np.array(data, dtype=dtype, copy=True, order=order, ndmin=ndmin))


def _asnumpy(a, stream=None, order="C", out=None, blocking=True):
    return a.get(order=order, out=out) if isinstance(a, ndarray) else np.asarray(a, order=order)


def _ascontiguousarray(a, dtype=None):
    return ndarray(np.ascontiguousarray(_unwrap(a, "cupy.ascontiguousarray"), dtype=dtype))


def _from_dlpack(tensor):
    return ndarray(np.from_dlpack(tensor))


module = _CupyModule("cupy", __doc__)
module.__version__ = f"{_API['cupy_version']}+standin"
module.ndarray = ndarray
module.asarray = _asarray
module.array = _array
module.asnumpy = _asnumpy
module.ascontiguousarray = _ascontiguousarray
module.from_dlpack = _from_dlpack
module.fft = _FFT()
module.cuda = _Cuda()
module.is_available = lambda: True


def backend():
    """The phasefeat backend named ``cupy`` that runs on the stand-in."""
    from phasefeat.backend import Backend

    return Backend("cupy", module, module.fft, DEVICE)


def _dump_api(path: Path) -> None:  # pragma: no cover - run where CuPy is installed
    import cupy
    import cupy.fft

    api = {"cupy_version": cupy.__version__, "numpy_version_at_dump": np.__version__,
           "cupy": sorted(n for n in dir(cupy) if not n.startswith("_")),
           "fft": sorted(n for n in dir(cupy.fft) if not n.startswith("_")),
           "ndarray": sorted(n for n in dir(cupy.ndarray) if not n.startswith("_")
                             or n in ("__dlpack__", "__dlpack_device__", "__cuda_array_interface__"))}
    path.write_text(json.dumps(api, indent=0))


if __name__ == "__main__":  # pragma: no cover
    if sys.argv[1:] == ["--dump-api"]:
        _dump_api(Path(__file__).resolve().parent / "data" / "cupy-api.json")
