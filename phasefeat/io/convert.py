"""``phasefeat convert``: a folder of raw radiographs -> one crash-safe HDF5 store.

The sorted sample list is cut into fixed pieces (independent of the number of
workers, so the result is too). Worker processes decode, fit and, on the CPU,
enhance one piece at a time; with a GPU they only decode and the main process
computes the features in batches. Each finished piece lands atomically in
``<output>.parts/``; a manifest there records what is being converted. Killed at
any moment, the same command resumes from the finished pieces; the final store
is assembled into a temporary file and renamed into place only when complete.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import glob
import hashlib
import json
import logging
import os
import shutil
import time
from collections import Counter
from pathlib import Path

from ..params import PhaseParams
from ._atomic import atomic_path
from .assemble import assemble, read_piece_failures, write_piece
from .discover import Discovery, discover
from .pieces import (
    MAX_PIECE,
    ConvertOptions,
    conversion_memory,
    finish_piece,
    process_piece,
    report_progress_to,
)
from .progress import PieceProgress, SteadyRateBar
from .store import COMPRESSIONS, FORMAT_VERSION

__all__ = ["ConvertOptions", "ConvertError", "ConvertSummary", "available_memory", "convert", "work_dir"]

logger = logging.getLogger("phasefeat")


class ConvertError(RuntimeError):
    """The conversion cannot start or go on; the message says why and what to do."""


class DiskFullError(ConvertError):
    """The disk filled up; finished pieces are kept."""


@dataclasses.dataclass(frozen=True)
class _RemoteBackend:
    name: str
    device: str


@dataclasses.dataclass
class ConvertSummary:
    output: Path
    discovered: int
    converted: int
    failed: int
    failures_by_reason: dict[str, int]
    seconds: float
    resumed_pieces: int
    backend: str
    device: str
    already_complete: bool = False
    warnings: tuple[str, ...] = ()

    @property
    def images_per_second(self) -> float:
        return self.converted / self.seconds if self.seconds > 0 else float("nan")


def work_dir(output: Path, shard_dir=None) -> Path:
    """Folder holding the manifest and finished pieces of an unfinished conversion.

    Next to the output by default; under ``shard_dir`` when given (storage that
    every Dask worker sees).
    """
    name = output.name + ".parts"
    return Path(shard_dir) / name if shard_dir else output.with_name(name)


# ---- the driver --------------------------------------------------------------------------

def _file_digest(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest() if path else ""


def _identity(disc: Discovery, params: PhaseParams, options: ConvertOptions, backend: str,
              labels, source_pattern: str | None = None, patient_pattern: str | None = None) -> dict:
    listing = []
    for s in disc.samples:
        st = (disc.root / s.path).stat()
        listing.append([s.path, s.label, s.patient_id, s.source, s.mask, st.st_size, st.st_mtime_ns])
    return {"format_version": FORMAT_VERSION, "input_root": str(disc.root.resolve()),
            "layout": disc.layout, "labels_file_sha256": _file_digest(labels),
            "source_pattern": source_pattern or "",
            # only when given, so that conversions of earlier versions resume
            **({"patient_pattern": patient_pattern} if patient_pattern else {}),
            "class_names": list(disc.class_names), "params": params.to_dict(),
            "options": dataclasses.asdict(options), "backend": backend,
            "listing": listing, "discovery_failures": [list(f) for f in disc.failures]}


def _describe_difference(old: dict, new: dict) -> str:
    lines = []
    for key in ("input_root", "layout", "labels_file_sha256", "source_pattern", "patient_pattern", "class_names",
                "backend",
                "format_version"):
        if old.get(key) != new.get(key):
            lines.append(f"{key}: {old.get(key)!r} -> {new.get(key)!r}")
    for group in ("params", "options"):
        for field in sorted(set(old.get(group, {})) | set(new.get(group, {}))):
            a, b = old.get(group, {}).get(field), new.get(group, {}).get(field)
            if a != b:
                lines.append(f"{group} {field}: {a!r} -> {b!r}")
    before = {row[0]: row for row in old.get("listing", [])}
    after = {row[0]: row for row in new.get("listing", [])}
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(p for p in set(before) & set(after) if before[p] != after[p])
    for what, names in (("added", added), ("removed", removed), ("changed", changed)):
        if names:
            shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
            lines.append(f"input files {what}: {len(names)} ({shown})")
    if not lines and old != new:
        lines.append("discovery failures differ")
    return "; ".join(lines)


def _check_output(output: Path, root: Path) -> None:
    """Refuse, before any work, an output that cannot be written or would destroy the input."""
    import tempfile

    if not output.parent.is_dir():
        raise ConvertError(f"output folder {output.parent} does not exist")
    try:
        inside = output.resolve().is_relative_to(Path(root).resolve())
    except OSError:
        inside = False
    if inside:
        raise ConvertError(f"{output} is inside the input folder {root}; write the store elsewhere "
                           "(it would be read as input next time, or destroy an input file)")
    if output.is_dir():
        raise ConvertError(f"{output} is a folder; give the store's file name")
    # The longest names the conversion creates beside the output: the temporary final file and
    # the work folder. Probing them now turns "name too long" or "read-only" into an error
    # before an hour of work, not after.
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".partial", dir=output.parent)
        os.close(fd)
        os.unlink(probe)
        parts = output.parent / f"{output.name}.parts"
        if not parts.exists():
            parts.mkdir()
            parts.rmdir()
    except OSError as exc:
        raise ConvertError(f"cannot write beside {output} ({exc.strerror or exc}); choose another "
                           "output folder or a shorter name") from None


def available_memory() -> int | None:
    """Bytes this process may still allocate: MemAvailable, within a cgroup's limit; None if unknown."""
    values = []
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    values.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            values.append(int(limit) - used)
    except (OSError, ValueError):
        pass
    return min(values) if values else None


def _check_memory(options: ConvertOptions, workers: int) -> None:
    """Refuse, before any work, a conversion whose pieces cannot fit in memory."""
    need, have = conversion_memory(options, workers), available_memory()
    if have is not None and need > have:
        gb = 1024 ** 3
        raise ConvertError(
            f"--size {options.size} needs about {need / gb:.1f} GB of memory ({options.piece_size or MAX_PIECE} images "
            f"per piece x {workers} worker{'s' if workers > 1 else ''}, estimated), {have / gb:.1f} GB are "
            "available; lower --size, --piece-size or --workers")


@contextlib.contextmanager
def _locked(work: Path):
    """Hold an OS lock on the work folder: a second convert of the same output says who runs it."""
    import fcntl

    work.mkdir(parents=True, exist_ok=True)
    handle = open(work / ".lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise ConvertError(f"the output is locked by {holder}: a conversion of the same output is "
                           "running; wait for it to finish") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"process {os.getpid()}")
    handle.flush()
    try:
        yield
    finally:
        handle.close()


def _remove_leftovers(output: Path) -> None:
    """Temporary files a killed run left beside the output (atomic writes that never landed)."""
    for stale in output.parent.glob(f".{glob.escape(output.name)}.*.partial"):
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink(missing_ok=True)


def _clear(work: Path) -> None:
    """Empty the work folder but keep its lock file (held by this process)."""
    for entry in work.iterdir():
        if entry.name == ".lock":
            continue
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def _prepare_work_dir(output: Path, work: Path, identity: dict, overwrite: bool) -> None:
    """Resume the unfinished conversion in ``work`` if it is this one; ``overwrite`` discards one
    made with other settings. The existing store (and its shards) stay until the new one lands."""
    manifest = work / "manifest.json"
    if manifest.exists():
        try:
            old = json.loads(manifest.read_text())
        except (OSError, ValueError):
            old = None
        if not isinstance(old, dict):  # damaged (or JSON of another shape): as if killed before it landed
            old = None
        if old is not None and old != identity and overwrite:
            _clear(work)
        elif old is not None and old != identity:
            raise ConvertError(
                f"an unfinished conversion in {work} used different settings or input "
                f"({_describe_difference(old, identity)}); rerun with the same ones to resume, "
                "or pass --overwrite to start over")
        if old is None:  # killed before the manifest landed: nothing finished yet
            _clear(work)
    if not manifest.exists():
        _clear(work)
        with atomic_path(manifest) as tmp:
            tmp.write_text(json.dumps(identity))


def _assemble_apart(output: Path, piece_paths, **kwargs) -> int:
    """:func:`~phasefeat.io.assemble.assemble` in a process of its own.

    HDF5 does not survive a full disk: once a write has failed, freeing the file's objects can
    crash the process (h5py 3, measured here on a 3 MB tmpfs: a segmentation fault after the
    error). In a child process the crash costs the child only; this process reports it.
    """
    import multiprocessing

    pool = multiprocessing.get_context("spawn").Pool(1, initializer=_init_worker, initargs=(None,))
    died = False
    try:
        return _result_of(pool, pool.apply_async(assemble, (output, piece_paths), kwargs), _worker_pids(pool))
    except _WorkerDied:
        died = True
        if shutil.disk_usage(output.parent).free < 2**20:
            raise OSError(errno.ENOSPC, "No space left on device") from None
        raise ConvertError(f"the process assembling {output} ended unexpectedly (killed, or out of memory); "
                           "the finished pieces are kept: rerun the same command") from None
    finally:
        _stop_pool(pool, died)


def _check_room(output: Path, piece_paths, compression: str) -> None:
    """Refuse to assemble an uncompressed store that cannot fit on its disk: HDF5 does not recover
    well from a full disk half-way through a file (checked before it is opened, not after)."""
    if compression != "none":  # the compressed size is not known in advance
        return
    need = sum(p.stat().st_size for p in piece_paths) + 2**20
    free = shutil.disk_usage(output.parent).free
    if need > free:
        raise DiskFullError(f"the store needs about {need / 2**20:.0f} MB next to {output}, {free / 2**20:.0f} MB "
                            "are free; free some space (or pass --compression gzip) and rerun the same command: "
                            "it resumes from the finished pieces")


def _library_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("phasefeat", "numpy", "scipy", "numba", "h5py", "pillow", "pydicom", "cupy-cuda12x"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def _init_worker(ticks):
    """Pool initializer: workers ignore Ctrl-C (the parent stops them) and report each file."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    report_progress_to(ticks.put if ticks is not None else None)


#: How often a piece may be started before a worker dying under it stops the conversion.
PIECE_ATTEMPTS = 3


def _run_pieces(tasks, workers, on_result, progress: PieceProgress):
    if workers <= 1 or len(tasks) <= 1:
        report_progress_to(progress.tick)
        try:
            for task in tasks:
                on_result(process_piece(task))
        finally:
            report_progress_to(None)
        return
    import multiprocessing

    workers = min(workers, len(tasks))
    context = multiprocessing.get_context("spawn")
    ticks = _TickChannel(context, progress)
    try:
        _pool_pieces(tasks, workers, on_result, progress, context, ticks.queue)
    finally:
        ticks.close()


class _TickChannel:
    """The workers' per-file progress ticks: a queue they put into, and a thread here that counts them.

    The queue's write lock is shared by every process that puts into it; a worker killed while it holds
    the lock (``kill -9``, the OOM killer, ``Pool.terminate``'s SIGTERM) never releases it. Every later
    put then waits forever, this process's last one too, and Python's exit waits for that put: the
    conversion printed its summary and never ended. The lock is freed after each pool has stopped.
    """

    def __init__(self, context, progress: PieceProgress):
        import threading

        self.queue = context.Queue()
        self._reader = threading.Thread(target=self._count, args=(progress,), daemon=True)
        self._reader.start()

    def _count(self, progress: PieceProgress) -> None:
        for piece_id in iter(self.queue.get, None):
            progress.tick(piece_id)

    def close(self) -> None:
        """End the counting thread; call once no worker is left."""
        _free_abandoned(self.queue._wlock)
        self.queue.put(None)
        self._reader.join(timeout=5)


class _WorkerDied(Exception):
    """A process of the pool ended while the pool was working (killed, or out of memory)."""


def _worker_pids(pool) -> set[int]:
    # multiprocessing.Pool replaces a dead worker with a new one, and the task the dead one held
    # is never finished: a change of the set of worker processes is how the loss shows.
    return {process.pid for process in pool._pool}  # no public way to list them


def _result_of(pool, result, workers_at_start: set[int]):
    """``result.get()``, or :class:`_WorkerDied` as soon as a worker of ``pool`` has died."""
    while not result.ready():
        result.wait(0.5)
        if not result.ready() and _worker_pids(pool) != workers_at_start:
            raise _WorkerDied
    return result.get()


def _unjam(pool) -> None:
    """Make ``pool.terminate()`` safe after a worker was killed: kill every worker, then free the task
    queue's read lock and the result queue's write lock if a killed worker held one (it never releases
    it, and ``terminate`` would wait for it forever)."""
    pool._worker_handler._state = "TERMINATE"  # no replacements for the workers killed below
    for process in pool._pool:
        process.kill()
    for process in pool._pool:
        process.join()
    _free_abandoned(pool._inqueue._rlock)
    _free_abandoned(getattr(pool._outqueue, "_wlock", None))


def _free_abandoned(lock) -> None:
    """Release ``lock`` if a process that has ended holds it; call only when no live process can take it."""
    if lock is not None:
        lock.acquire(timeout=0.2)  # free: now ours; held by a dead worker: nobody else will release it
        lock.release()


def _stop_pool(pool, worker_died: bool) -> None:
    """Stop ``pool`` now (its workers must not finish their work first), also after a worker died."""
    if worker_died:
        _unjam(pool)
    pool.terminate()
    pool.join()


def _pool_pieces(tasks, workers, on_result, progress, context, ticks):
    """The pieces on a process pool; a worker that dies (the kernel's OOM killer, ``kill -9``) costs
    the pieces it had in flight, which start again, each at most :data:`PIECE_ATTEMPTS` times."""
    from collections import deque

    todo, attempts = deque(tasks), Counter()
    while todo:
        # spawn: children never inherit a CUDA context or h5py handles from the parent.
        # Workers ignore Ctrl-C; the parent stops them, so an interrupt prints one line.
        pool = context.Pool(workers, initializer=_init_worker, initargs=(ticks,))
        pending, died = deque(), False
        try:
            workers_at_start = _worker_pids(pool)
            # At most two pieces per worker in flight, so memory stays flat however many
            # images there are, even when this process (GPU features, writing) is the slower side.
            while todo or pending:
                while todo and len(pending) < 2 * workers:
                    task = todo.popleft()
                    attempts[task["piece_id"]] += 1
                    pending.append((task, pool.apply_async(process_piece, (task,))))
                piece = _result_of(pool, pending[0][1], workers_at_start)
                pending.popleft()
                on_result(piece)
        except _WorkerDied:
            died = True
            lost = [task for task, result in pending if not result.ready()]
            for _, result in pending:
                if result.ready():  # finished before the loss was seen
                    on_result(result.get())
            for task in lost:
                progress.restart(task["piece_id"])
            spent = [t for t in lost if attempts[t["piece_id"]] >= PIECE_ATTEMPTS]
            if spent:
                first = spent[0]
                raise ConvertError(
                    f"a worker process died {attempts[first['piece_id']]} times while converting piece {first['piece_id']} "
                    f"(from {first['entries'][0][1]}): most often the memory ran out (features at the native "
                    "resolution need about 170 bytes per pixel); finished pieces are kept: lower --workers or "
                    "--piece-size, or pass --features-at, and rerun the same command") from None
            logger.warning("a worker process died; %d piece(s) start again", len(lost))
            todo.extendleft(reversed(lost))
        finally:
            _stop_pool(pool, died)
            if ticks is not None:  # a worker stopped mid-put must not silence the next pool's ticks
                _free_abandoned(ticks._wlock)


def convert(input_root, output, *, params: PhaseParams | None = None,
            options: ConvertOptions | None = None, labels=None, classes=None, aliases=None,
            workers: int = 1, backend: str = "auto", batch_size: int = 64, overwrite: bool = False,
            compression: str = "none", progress: bool = True, command_line: str = "",
            scheduler: str | None = None, shard_dir=None, virtual: bool = False,
            source_pattern: str | None = None, patient_pattern: str | None = None) -> ConvertSummary:
    """Convert every radiograph under ``input_root`` into the store ``output``.

    See ``phasefeat convert --help`` and ``docs/store-format.md``. Raises
    :class:`ConvertError` (and ``DiscoveryError``) with a clear message for
    unusable arguments, a missing output folder, a mismatched resume or a full disk.
    """
    from ..backend import get_backend

    params = params or PhaseParams()
    options = options or ConvertOptions()
    output = Path(output)
    if compression not in COMPRESSIONS:
        raise ConvertError(f"compression must be one of {list(COMPRESSIONS)}, got {compression!r}")
    for name, value in (("batch_size", batch_size), ("workers", workers)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConvertError(f"{name} must be a positive integer, got {value!r}")
    if not Path(input_root).is_dir():
        raise ConvertError(f"input folder {input_root} does not exist or is not a folder")
    work = work_dir(output, shard_dir)
    try:
        output_exists, work_exists = output.exists(), work.exists()
    except OSError as exc:  # e.g. a name longer than the file system allows
        raise ConvertError(f"cannot write beside {output} ({exc.strerror or exc}); choose another "
                           "output folder or a shorter name") from None
    leftover = output_exists and work_exists and not overwrite
    if output_exists and not overwrite and not leftover:
        raise ConvertError(f"{output} already exists; pass --overwrite to replace it")
    _check_output(output, input_root)
    if not scheduler:  # on a cluster the pieces live in the workers' memory, not here
        _check_memory(options, workers)
    start = time.perf_counter()
    disc = discover(input_root, labels=labels, classes=classes, aliases=aliases,
                    source_pattern=source_pattern, patient_pattern=patient_pattern)
    logger.info("discovery: %d files (%d already failed) in %.2f s", disc.discovered, len(disc.failures),
                time.perf_counter() - start)
    if scheduler and backend in ("cupy", "auto"):
        # Resolved on the workers (the client may have no GPU); "auto" per worker.
        be = _RemoteBackend(backend, "Dask workers" + (" (GPU)" if backend == "cupy" else
                                                       " (GPU where usable, else CPU)"))
    else:
        be = get_backend(backend)
    options = options.with_piece_size_for(len(disc.samples), distributed=bool(scheduler))
    identity = _identity(disc, params, options, be.name, labels, source_pattern, patient_pattern)
    try:
        with _locked(work):
            _remove_leftovers(output)
            if leftover:
                return _finish_leftover(output, work, identity, disc, be, start)
            if output.exists() and not overwrite:  # another conversion finished it meanwhile
                raise ConvertError(f"{output} already exists; pass --overwrite to replace it")
            _prepare_work_dir(output, work, identity, overwrite)
            return _convert(disc, output, work, params, options, be, identity, workers, batch_size,
                            compression, progress, command_line, start, scheduler, virtual)
    except OSError as exc:
        _forget(work, work_exists)
        if exc.errno == errno.ENOSPC:
            raise DiskFullError(f"disk full while writing next to {output}; free some space and "
                                "rerun the same command: it resumes from the finished pieces") from None
        raise
    except BaseException:
        _forget(work, work_exists)
        raise


def _forget(work: Path, existed: bool) -> None:
    """After a failure: remove the work folder this command created if no piece finished in it, so
    that a failed command (an unreachable scheduler, a full disk at once) leaves nothing behind."""
    if existed or not work.is_dir() or any(work.glob("piece-*.npz")):
        return
    shutil.rmtree(work, ignore_errors=True)


def identity_digest(identity: dict) -> str:
    """What a store was converted from and how: recorded in the store (``conversion_identity``)."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def _finish_leftover(output, work, identity, disc, be, start) -> ConvertSummary:
    """OUTPUT and OUTPUT.parts/ both exist. Complete only when the store *is* this conversion (its
    recorded identity, not the manifest's): a run killed while it cleaned up. Otherwise the store
    is an older one (an interrupted --overwrite) and the work folder holds the new conversion."""
    from .store import StoreError, open_store

    try:
        with open_store(output) as store:
            converted, failures = len(store), store.failures
            recorded = store.attrs.get("conversion_identity")
    except StoreError:
        recorded = None
    if recorded != identity_digest(identity):
        try:
            resumable = json.loads((work / "manifest.json").read_text()) == identity
        except (OSError, ValueError):
            resumable = False
        raise ConvertError(
            f"{output} already exists and was not made by this command (other input or settings, or an "
            f"earlier version); {work} holds an unfinished conversion" + (" of this command" if resumable else "")
            + ": pass --overwrite to replace the store" + (", resuming from the finished pieces" if resumable
                                                            else ""))
    shutil.rmtree(work)
    by_reason = Counter(reason.split(" (")[0] for _, reason in failures)
    return ConvertSummary(output, disc.discovered, converted, len(failures), dict(by_reason),
                          time.perf_counter() - start, 0, be.name, be.device, already_complete=True,
                          warnings=disc.warnings)


def _convert(disc, output, work, params, options, be, identity, workers, batch_size,
             compression, progress, command_line, start, scheduler, virtual) -> ConvertSummary:

    class_index = {name: i for i, name in enumerate(disc.class_names)}
    entries = [(i, s.path, class_index[s.label], s.patient_id, s.source, s.mask)
               for i, s in enumerate(disc.samples)]
    size = options.piece_size
    chunks = [entries[k:k + size] for k in range(0, len(entries), size)]
    piece_paths = [work / f"piece-{k:06d}.npz" for k in range(len(chunks))]
    done = [k for k, p in enumerate(piece_paths) if p.exists()]
    base = {"root": str(disc.root), "options": dataclasses.asdict(options),
            "params_json": params.to_json(), "enhance_here": be.name == "numpy",
            "batch_size": batch_size}
    tasks = [{**base, "piece_id": k, "entries": chunks[k]} for k in range(len(chunks)) if k not in done]
    bar = SteadyRateBar(total=len(entries), initial=sum(len(chunks[k]) for k in done), unit="img",
                        disable=not progress, dynamic_ncols=True, desc="convert",
                        warmup=1 if scheduler else max(1, min(workers, len(tasks))))
    moved = PieceProgress(bar, [len(c) for c in chunks], len(disc.failures))

    def on_result(piece):
        piece = finish_piece(piece, base, be.name)  # GPU features in this process, in batches
        write_piece(piece_paths[int(piece["piece_id"])], piece)
        moved.settle(int(piece["piece_id"]), len(piece["failed_path"]))

    started = time.perf_counter()
    try:
        if scheduler:
            from .distributed import run_pieces_on_dask

            devices = run_pieces_on_dask(tasks, piece_paths, scheduler, be.name, moved.settle,
                                         echo=bar.write)
            if devices:  # what the workers computed on, not only what was asked for
                be = _RemoteBackend(be.name, f"Dask workers: {'; '.join(devices)}")
        else:
            _run_pieces(tasks, workers, on_result, moved)
    finally:
        bar.close()
    todo = sum(len(t["entries"]) for t in tasks)
    seconds = time.perf_counter() - started
    logger.info("pieces: %d of %d in %.1f s (%.1f images/s; %d finished earlier)", len(tasks), len(chunks),
                seconds, todo / seconds if seconds else float("nan"), len(done))
    failures = list(disc.failures)
    for path in piece_paths:
        failures += read_piece_failures(path)
    failures.sort()
    versions = _library_versions()
    attrs = {"params_json": params.to_json(), "params_digest": params.digest(),
             "preset": params.preset_name(), "features_at": options.features_label,
             "phasefeat_version": versions.get("phasefeat", "unknown"),
             "backend": be.name, "device": be.device,
             "library_versions": json.dumps(versions),
             "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "input_root": str(disc.root.resolve()),
             "command_line": command_line, "layout": disc.layout, "size": options.size,
             "source_pattern": identity["source_pattern"], "patient_pattern": identity.get("patient_pattern", ""),
             "fit": options.fit, "cxr_dtype": options.cxr_dtype, "enh_dtype": options.enh_dtype,
             "compression": compression, "discovered": disc.discovered,
             "engine": f"dask {scheduler}" if scheduler else "local",
             "conversion_identity": identity_digest(identity)}
    _check_room(output, piece_paths, compression)
    started = time.perf_counter()
    converted = _assemble_apart(output, piece_paths, shape=(options.size, options.size),
                                cxr_dtype=options.cxr_dtype, enh_dtype=options.enh_dtype,
                                class_names=list(disc.class_names), failures=failures, attrs=attrs,
                                compression=compression, virtual=virtual)
    logger.info("assembly: %d samples into %s in %.2f s", converted, output, time.perf_counter() - started)
    shutil.rmtree(work)
    by_reason = Counter(reason.split(" (")[0] for _, reason in failures)
    return ConvertSummary(output, disc.discovered, converted, len(failures), dict(by_reason),
                          time.perf_counter() - start, len(done), be.name, be.device, warnings=disc.warnings)

