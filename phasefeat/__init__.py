"""phasefeat: GPU-accelerated local-phase features of chest radiographs.

The public API: :class:`PhaseParams`, :func:`monogenic`, :func:`enhance` and
:class:`BackendUnavailableError`. Everything is written once for an array
module (NumPy, or CuPy on a GPU).
"""

from importlib.metadata import PackageNotFoundError, version

from .backend import BackendUnavailableError, gpu_available
from .features import enhance
from .monogenic import MonogenicResult, monogenic
from .params import PhaseParams

try:
    __version__ = version("phasefeat")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["PhaseParams", "monogenic", "MonogenicResult", "enhance", "BackendUnavailableError",
           "gpu_available", "__version__"]
