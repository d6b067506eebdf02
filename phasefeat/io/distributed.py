"""Running the conversion's pieces on a Dask cluster (the ``distributed`` extra).

The single-machine path already cuts the work into fixed, independent pieces
and assembles the store from finished piece files. On a cluster each piece is
one Dask task: a worker decodes, computes the features (on its GPU with
``--backend cupy``) and writes the piece atomically into the shard folder, which
every worker and the client must see. The client only counts and, at the end,
assembles the same store a single machine would have made. A worker killed
mid-task is retried by Dask; a client killed mid-run resumes from the finished
pieces, exactly as on one machine.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

__all__ = ["run_pieces_on_dask", "DaskUnavailableError", "parse_scheduler", "connect", "quiet_dask",
           "require_distributed", "scheduler_address", "probe_scheduler", "start_local_cluster"]

logger = logging.getLogger("phasefeat")


class DaskUnavailableError(RuntimeError):
    """Dask distributed is not installed or the scheduler cannot be reached."""


def dask_piece(task: dict, out_path: str, backend: str) -> tuple[int, int, str]:
    """One task on a worker: process a piece and write it; returns (converted, failed, device).

    ``backend="auto"`` is resolved here, on the worker: its GPU when usable. ``device``
    says what computed the features (``"cupy on NVIDIA H100 ..."``).
    """
    from ..backend import get_backend
    from .assemble import write_piece
    from .pieces import finish_piece, process_piece

    resolved = get_backend(backend)
    task = {**task, "enhance_here": resolved.name == "numpy"}
    piece = finish_piece(process_piece(task), task, resolved.name)
    write_piece(Path(out_path), piece)
    return len(piece["index"]), len(piece["failed_path"]), f"{resolved.name} on {resolved.device}"


def parse_scheduler(scheduler: str) -> tuple[str, object]:
    """What ``--scheduler`` names: ``("local", N)``, ``("address", "tcp://...")`` or ``("file", path)``.

    Raises
    ------
    DaskUnavailableError
        The value is none of these (checked before any work starts).
    """
    if scheduler.startswith("local:"):
        try:
            n = int(scheduler.split(":", 1)[1])
        except ValueError:
            raise DaskUnavailableError(f"--scheduler local:N needs a number of workers, got {scheduler!r}") \
                from None
        if n < 1:
            raise DaskUnavailableError("--scheduler local:N needs N >= 1")
        return "local", n
    if "://" in scheduler:
        return "address", scheduler
    if scheduler.endswith(".json"):
        if not Path(scheduler).is_file():
            raise DaskUnavailableError(f"--scheduler {scheduler}: no such scheduler file (written by "
                                       "`dask scheduler --scheduler-file PATH`)")
        scheduler_address(Path(scheduler))
        return "file", Path(scheduler)
    raise DaskUnavailableError(f"--scheduler takes local:N, tcp://HOST:PORT or a scheduler file "
                               f"(PATH.json), got {scheduler!r}")


def scheduler_address(path: Path) -> str:
    """The address in a scheduler file (``dask scheduler --scheduler-file``), read and checked before
    any connection: Dask itself fails on a damaged one with an assertion, after seconds."""
    written = "a scheduler file is written by `dask scheduler --scheduler-file PATH`"
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not JSON"
        raise DaskUnavailableError(f"--scheduler {path}: {reason}; {written}") from None
    address = record.get("address") if isinstance(record, dict) else None
    if not isinstance(address, str) or "://" not in address:
        raise DaskUnavailableError(f"--scheduler {path}: no scheduler address in it (an \"address\" such as "
                                   f"tcp://HOST:PORT); {written}")
    return address


#: Seconds a scheduler has to greet a new connection (it speaks first, at once).
GREETING_SECONDS = 10
#: The largest greeting a Dask scheduler sends (a few hundred bytes in practice).
_GREETING_MAX = 1 << 20


def probe_scheduler(address: str, seconds: float = GREETING_SECONDS) -> None:
    """Check that ``tcp://HOST:PORT`` speaks Dask before a client waits on it.

    A Dask scheduler sends its handshake as soon as a connection opens: an 8-byte frame length,
    then a frame count. A port that accepts and stays silent (a wrong port, a proxy, a firewall that
    holds connections) would keep Dask's client waiting without end, and one that answers other
    bytes made it allocate what they said (exabytes). Other schemes (tls://, ucx://) are left to Dask.

    Raises
    ------
    DaskUnavailableError
        Nothing answers, nothing arrives within ``seconds``, or what arrives is not Dask's.
    """
    import socket
    import struct
    import time
    from urllib.parse import urlsplit

    parts = urlsplit(address)
    if parts.scheme != "tcp":
        return
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
    if not host or not port:
        raise DaskUnavailableError(f"--scheduler {address}: not an address of the form tcp://HOST:PORT")
    deadline = time.monotonic() + seconds
    try:
        with socket.create_connection((host, port), timeout=seconds) as conn:
            head = _receive(conn, 16, deadline)
    except TimeoutError:
        raise DaskUnavailableError(f"--scheduler {address}: it accepts connections but sent nothing in {seconds:g} s, "
                                   "so it is not a Dask scheduler (a wrong port, a proxy or a firewall?)") from None
    except OSError as exc:
        raise DaskUnavailableError(f"cannot reach the Dask scheduler at {address}: "
                                   f"{exc.strerror or exc}") from None
    size, frames = struct.unpack("<QQ", head) if len(head) == 16 else (0, 0)
    if not (16 <= size + 8 <= _GREETING_MAX and 1 <= frames <= 64):
        raise DaskUnavailableError(f"--scheduler {address}: it answers, but not as a Dask scheduler does "
                                   "(another service on that port?)")


def _receive(conn, n: int, deadline: float) -> bytes:
    """Up to ``n`` bytes, fewer where the other side closes; TimeoutError past ``deadline``."""
    import time

    data = b""
    while len(data) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        conn.settimeout(left)
        chunk = conn.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def quiet_dask() -> None:
    """Dask's start-up chatter only with ``-v``."""
    if not logger.isEnabledFor(logging.INFO):
        logging.getLogger("distributed").setLevel(logging.WARNING)


def require_distributed():
    """The ``distributed`` package, or a one-line error saying how to install it."""
    try:
        import distributed
    except ImportError:
        raise DaskUnavailableError("--scheduler needs Dask distributed: pip install 'phasefeat[distributed]'") \
            from None
    return distributed


def connect(scheduler: str):
    """A ``distributed.Client`` for an existing cluster (an address or a scheduler file)."""
    Client = require_distributed().Client
    kind, value = parse_scheduler(scheduler)
    address = scheduler_address(value) if kind == "file" else value
    probe_scheduler(address)
    quiet_dask()
    try:
        return Client(address, timeout="20s")
    except Exception as exc:  # whatever the other side made Dask raise: one line, never a traceback
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DaskUnavailableError(f"cannot reach the Dask scheduler at {scheduler}: {first}") from None


#: Starts of a local cluster tried before giving up (a worker process killed while it starts
#: makes Dask raise "Nanny failed to start").
LOCAL_START_TRIES = 3


def start_local_cluster(start, what: str):
    """``start()`` (returning ``(cluster, client)``), tried again when the cluster fails to start.

    Raises
    ------
    DaskUnavailableError
        After :data:`LOCAL_START_TRIES` failed starts, with the last reason in one line.
    """
    for attempt in range(1, LOCAL_START_TRIES + 1):
        try:
            return start()
        except (RuntimeError, TimeoutError, OSError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            logger.info("the local Dask cluster (%s) did not start (try %d): %s", what, attempt, reason)
    raise DaskUnavailableError(f"the local Dask cluster ({what}) did not start in {LOCAL_START_TRIES} tries "
                               f"({reason}); is the machine short of memory or processes?")


def _client(scheduler: str):
    distributed = require_distributed()
    kind, n = parse_scheduler(scheduler)
    if kind != "local":
        return connect(scheduler), None
    quiet_dask()
    import dask

    def start():
        # Dask starts workers with MALLOC_TRIM_THRESHOLD_=65536, which pins glibc's mmap
        # threshold: every multi-MB NumPy array is then mmapped and page-faulted afresh,
        # and the features ran 3.5x slower (measured). Leave glibc's defaults alone.
        with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
            cluster = distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                               dashboard_address=":0", silence_logs=logging.ERROR)
        return cluster, distributed.Client(cluster)

    cluster, client = start_local_cluster(start, scheduler)
    return client, cluster


def run_pieces_on_dask(tasks, piece_paths, scheduler: str, backend: str, on_done, echo=print) -> list[str]:
    """Submit every unfinished piece to a Dask cluster and wait for all of them.

    Parameters
    ----------
    tasks : list of dict
        The pieces still to do (as :func:`phasefeat.io.pieces.process_piece` takes them).
    piece_paths : list of Path
        Where piece ``k`` lands; must be on storage every worker can write.
    scheduler : str
        ``tcp://host:8786`` or a scheduler file (an existing cluster), or ``local:N``
        (a LocalCluster of N worker processes, one thread each).
    backend : {"numpy", "cupy", "auto"}
        Where the workers compute the features (``auto``: each worker's GPU when usable).
    on_done : callable
        Called with ``(piece_id, failed)`` as each piece finishes (the bar moves per piece here).

    Returns
    -------
    list of str
        What computed the features, one entry per distinct worker kind (``"cupy on <GPU>"``).
    """
    from distributed import as_completed

    client, cluster = _client(scheduler)
    try:
        echo(f"Dask dashboard: {client.dashboard_link}")
        futures = {client.submit(dask_piece, task, str(piece_paths[task["piece_id"]]), backend,
                                 key=f"phasefeat-piece-{task['piece_id']}", pure=False, retries=3):
                   task["piece_id"] for task in tasks}
        devices = set()
        for future in as_completed(list(futures)):
            _, failed, device = future.result()
            devices.add(device)
            on_done(futures[future], failed)
        return sorted(devices)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
