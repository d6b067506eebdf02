"""Dask worker preload for tests: the worker's ``cupy`` is the stand-in (tests/cupy_standin.py)."""

import sys
from pathlib import Path


def dask_setup(worker):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import cupy_standin

    from phasefeat import backend

    sys.modules["cupy"] = cupy_standin.module
    backend._cupy_backend_or_reason = cupy_standin.backend
