"""A click group whose commands report operating-system errors in one line.

A name longer than the file system allows, a folder that vanished or a full disk
is the user's environment, not a bug: it ends in ``Error: ...`` and exit 1, never
in a traceback. Both command lines (``phasefeat`` and ``trainer``) use it.
"""

from __future__ import annotations

import errno

import click

__all__ = ["OneLineErrorGroup", "os_error_message"]


def os_error_message(exc: OSError) -> str:
    """``"<what went wrong>: <path>"`` for an OSError, one line."""
    what = exc.strerror or str(exc) or type(exc).__name__
    where = exc.filename if exc.filename is not None else ""
    if exc.filename2 is not None:
        where = f"{where} -> {exc.filename2}"
    return f"{what}: {where}" if where else what


class OneLineErrorGroup(click.Group):
    """``click.Group`` that turns an ``OSError`` escaping a command into one line."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except OSError as exc:
            if exc.errno == errno.EPIPE:  # click's own handling of a closed pipe
                raise
            raise click.ClickException(os_error_message(exc)) from None
