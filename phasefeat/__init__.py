"""phasefeat: GPU-accelerated local-phase features of chest radiographs.

The public API: :class:`PhaseParams`, :func:`monogenic`, :func:`enhance` and
:class:`BackendUnavailableError`. Everything is written once for an array
module (NumPy, or CuPy on a GPU).

The names are imported on first use, so ``import phasefeat.cli`` (every command's
start-up) does not pay for NumPy, Numba and the filters before it needs them.

Subpackages: :mod:`phasefeat.maths` (filters, monogenic signal, ELEA, ENH),
:mod:`phasefeat.io` (reading radiographs, conversion, the store) and
:mod:`phasefeat.tools` (figures, synthetic phantoms, PyTorch adapters); at the top
level, :mod:`phasefeat.params` and :mod:`phasefeat.backend` (the array-module seam)
that all of them use, and the command line.
"""

from importlib import import_module

_PUBLIC = {"PhaseParams": ".params", "monogenic": ".maths.monogenic", "MonogenicResult": ".maths.monogenic",
           "enhance": ".maths.features", "BackendUnavailableError": ".backend", "gpu_available": ".backend"}

__all__ = [*_PUBLIC, "__version__"]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("phasefeat")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0.0.0+unknown"


def __getattr__(name: str):
    # Looked up on first use: reading the installed metadata costs a tenth of a second at start-up.
    if name == "__version__":
        globals()[name] = value = _version()
        return value
    if name in _PUBLIC:
        value = getattr(import_module(_PUBLIC[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'phasefeat' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
