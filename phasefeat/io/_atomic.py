"""Writes that land atomically: a file appears under its final name only when complete."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def make_dirs(path: str | os.PathLike) -> list[Path]:
    """Create ``path`` and its missing parents; on failure remove what was created.

    ``mkdir -p`` that leaves nothing behind when a later level cannot be made (a
    name too long, a read-only parent). Returns the folders it created, outermost
    first.
    """
    path = Path(path)
    created: list[Path] = []
    try:
        for folder in [*reversed(path.parents), path]:
            if folder.is_dir():
                continue
            try:
                folder.mkdir()
            except FileExistsError:  # made meanwhile by someone else, or a file (is_dir said no)
                if not folder.is_dir():
                    raise
                continue
            created.append(folder)
    except OSError:
        remove_dirs(created)
        raise
    return created


def remove_dirs(created: list[Path]) -> None:
    """Remove folders made by :func:`make_dirs` (innermost first) if they are still empty."""
    for folder in reversed(created):
        with contextlib.suppress(OSError):
            folder.rmdir()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; rename it into place on success.

    The parent folder is created if needed. On any error the temporary file is
    removed and ``path`` is left as it was. The file gets the usual permissions
    (``0o666`` less the umask), not ``mkstemp``'s private ``0o600``.
    """
    path = Path(path)
    created, tmp = make_dirs(path.parent), None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
        os.close(fd)
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        remove_dirs(created)
        raise
