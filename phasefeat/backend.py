"""The one array-module seam: NumPy on the CPU, CuPy on a GPU.

Everything numeric in phasefeat is written once against an array module ``xp``.
This module decides which one to use, checks that CuPy can really run (importing
it succeeds on machines without a driver; only the first allocation fails), and
moves arrays across the host/device boundary explicitly.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import types

import numpy as np

__all__ = ["Backend", "BackendUnavailableError", "get_backend", "gpu_available", "is_cupy_array"]

logger = logging.getLogger("phasefeat")

BACKENDS = ("numpy", "cupy", "auto")


class BackendUnavailableError(RuntimeError):
    """The requested array backend cannot run on this machine."""


@dataclasses.dataclass(frozen=True)
class Backend:
    """An array module together with what is needed to use it.

    Attributes
    ----------
    name : {"numpy", "cupy"}
    xp : module
        ``numpy`` or ``cupy``.
    fft : module
        FFT functions for ``xp`` arrays (``rfft2``, ``irfft2``): ``scipy.fft``
        on the CPU (about 5x faster than ``numpy.fft`` for float32 ``rfft2`` at
        299x299; :mod:`phasefeat._cpu_fft`), ``cupy.fft`` (cuFFT) on the GPU.
    device : str
        Human-readable device description (CPU or GPU model).
    """

    name: str
    xp: types.ModuleType
    fft: types.ModuleType
    device: str

    def asarray(self, array, dtype=None):
        """Move ``array`` to this backend (host to device if needed)."""
        if self.name == "numpy" and is_cupy_array(array):
            array = array.get()
        return self.xp.asarray(array, dtype=dtype)

    def to_numpy(self, array) -> np.ndarray:
        """Return ``array`` as a NumPy array (device to host if needed)."""
        return array.get() if is_cupy_array(array) else np.asarray(array)

    def synchronize(self) -> None:
        """Wait for queued device work (no-op on the CPU)."""
        if self.name == "cupy":
            self.xp.cuda.get_current_stream().synchronize()

    @property
    def device_id(self) -> int:
        return int(self.xp.cuda.Device().id) if self.name == "cupy" else -1


def is_cupy_array(array) -> bool:
    """True for a ``cupy.ndarray`` without importing CuPy."""
    return type(array).__module__.split(".")[0] == "cupy"


def _cupy_status() -> tuple[types.ModuleType | None, str]:
    """Return ``(cupy, "")`` when a GPU is usable, else ``(None, reason)``."""
    try:
        import cupy
    except ImportError as exc:
        return None, (f"CuPy is not installed ({exc}); install the GPU extra: "
                      "pip install 'phasefeat[gpu]' (CUDA 12)")
    try:
        if not cupy.is_available():
            return None, ("CuPy is installed but no usable CUDA device was found; check "
                          "`nvidia-smi` and that the driver supports CUDA 12, or use backend='numpy'")
        cupy.zeros(1).sum().item()  # first allocation and kernel: where driver errors appear
    except Exception as exc:  # CUDARuntimeError and friends do not share a base class
        return None, (f"CuPy could not use the GPU: {type(exc).__name__}: {exc}; check the "
                      "driver/CUDA runtime versions, or use backend='numpy'")
    return cupy, ""


@functools.cache
def _cupy_backend_or_reason() -> Backend | str:
    cupy, reason = _cupy_status()
    if cupy is None:
        return reason
    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    name = props["name"]
    return Backend("cupy", cupy, cupy.fft, name.decode() if isinstance(name, bytes) else str(name))


def gpu_available() -> bool:
    """True when CuPy is installed and a CUDA device really works."""
    return isinstance(_cupy_backend_or_reason(), Backend)


@functools.cache
def _numpy_backend() -> Backend:
    from . import _cpu_fft

    return Backend("numpy", np, _cpu_fft, cpu_model())


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo where available, else the platform's word."""
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def get_backend(name: str | None = "numpy", *, like=None) -> Backend:
    """Resolve a backend name to a :class:`Backend`.

    Parameters
    ----------
    name : {"numpy", "cupy", "auto"} or None
        ``"auto"`` picks CuPy only when a GPU is really usable, otherwise
        NumPy, and logs the choice. ``None`` follows ``like``: CuPy for a CuPy
        array, NumPy otherwise.
    like : array, optional
        Array whose kind decides the backend when ``name`` is None.

    Returns
    -------
    Backend

    Raises
    ------
    BackendUnavailableError
        If ``"cupy"`` was asked for and cannot work; the message says why and
        how to fix it.
    ValueError
        For an unknown name.
    """
    if name is None:
        name = "cupy" if like is not None and is_cupy_array(like) else "numpy"
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)} or None, got {name!r}")
    if name == "numpy":
        return _numpy_backend()
    found = _cupy_backend_or_reason()
    if name == "cupy":
        if isinstance(found, str):
            raise BackendUnavailableError(found)
        return found
    if isinstance(found, Backend):
        logger.info("backend auto: using CuPy on %s", found.device)
        return found
    logger.info("backend auto: using NumPy (%s)", found)
    return _numpy_backend()
