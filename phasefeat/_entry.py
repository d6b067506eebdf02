"""Console-script entry points of ``phasefeat`` and ``trainer``.

Ctrl-C while a command line is still loading ends in one line, not in a traceback
from the middle of an import; once loaded, click reports it ("Aborted!"). SIGTERM is
treated as Ctrl-C.
"""

from __future__ import annotations

import sys
from importlib import import_module

__all__ = ["phasefeat", "trainer"]


def _terminate(signum, frame):
    """SIGTERM (``timeout``, ``kill``, job schedulers) ends a command as Ctrl-C does: one line,
    worker processes stopped, finished work kept for the next run."""
    raise KeyboardInterrupt


def _run(module: str) -> None:
    import signal

    signal.signal(signal.SIGTERM, _terminate)
    try:
        main = import_module(module).main
    except KeyboardInterrupt:
        sys.stderr.write("Aborted!\n")
        raise SystemExit(130) from None
    main()


def phasefeat() -> None:
    """``phasefeat`` (:mod:`phasefeat.cli`)."""
    _run("phasefeat.cli")


def trainer() -> None:
    """``trainer`` (:mod:`trainer.cli`)."""
    _run("trainer.cli")
