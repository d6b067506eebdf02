"""The conversion's driver, step by step and in process (:mod:`phasefeat.io.convert`): the checks
before any work, the work folder and its manifest, resuming, the pieces' pool and its faults,
assembling, and what a failure leaves behind.

Worker pools are replaced by stand-ins and the store is assembled in this process, except where a
test names the process it needs; ``test_convert.py`` and ``test_robustness.py`` run whole
conversions.
"""

import collections
import dataclasses
import errno
import hashlib
import json
import logging
import os
import threading
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from phasefeat import PhaseParams
from phasefeat.io import convert as convert_module
from phasefeat.io.assemble import assemble, write_piece
from phasefeat.io.convert import (
    ConvertError,
    ConvertOptions,
    DiskFullError,
    available_memory,
    convert,
    identity_digest,
    work_dir,
)
from phasefeat.io.discover import discover
from phasefeat.io.pieces import MAX_PIECE, report_progress_to
from phasefeat.io.store import open_store
from phasefeat.tools.phantom import chest_phantom

OPTIONS = ConvertOptions(size=16, features_at=None, piece_size=2)


@pytest.fixture
def raw(tmp_path):
    """Two classes of small phantoms (5 images) and one file that fails."""
    root = tmp_path / "raw"
    for c, name in enumerate(("covid", "normal")):
        (root / name).mkdir(parents=True)
        for k in range(3 - c):
            Image.fromarray(chest_phantom((24 + k, 20), seed=10 * c + k)).save(root / name / f"{k}.png")
    (root / "normal" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    return root


@pytest.fixture
def in_process(monkeypatch):
    """The store assembled in this process (the child process is tested on its own below)."""
    calls = []

    def apart(output, piece_paths, **kwargs):
        calls.append(len(piece_paths))
        return assemble(output, piece_paths, **kwargs)

    monkeypatch.setattr(convert_module, "_assemble_apart", apart)
    return calls


def run(raw, out, **kwargs):
    return convert(raw, out, **{"options": OPTIONS, "backend": "numpy", "progress": False, **kwargs})


# --- the work folder ---------------------------------------------------------------------------------

def test_the_work_folder_is_beside_the_output_or_under_the_shard_folder(tmp_path):
    assert work_dir(tmp_path / "enh.h5") == tmp_path / "enh.h5.parts"
    assert work_dir(tmp_path / "enh.h5", tmp_path / "shared") == tmp_path / "shared" / "enh.h5.parts"
    assert work_dir(tmp_path / "enh.h5", str(tmp_path / "shared")) == tmp_path / "shared" / "enh.h5.parts"


# --- what a conversion is --------------------------------------------------------------------------

def identity_of(raw, **kwargs):
    disc = discover(raw)
    args = {"params": PhaseParams(), "options": OPTIONS, "backend": "numpy", "labels": None, **kwargs}
    return convert_module._identity(disc, args.pop("params"), args.pop("options"), args.pop("backend"),
                                    args.pop("labels"), **args)


def test_the_identity_lists_every_file_with_its_size_and_time(raw):
    identity = identity_of(raw)
    assert identity["input_root"] == str(raw.resolve()) and identity["layout"] == "class-folders"
    assert identity["class_names"] == ["covid", "normal"] and identity["backend"] == "numpy"
    assert identity["params"] == PhaseParams().to_dict() and identity["options"] == dataclasses.asdict(OPTIONS)
    assert identity["labels_file_sha256"] == "" and identity["source_pattern"] == ""
    assert "patient_pattern" not in identity  # so that conversions of earlier versions resume
    st = (raw / "covid" / "0.png").stat()
    assert identity["listing"][0] == ["covid/0.png", "covid", "", "", "", st.st_size, st.st_mtime_ns]
    assert [row[0] for row in identity["listing"]] == ["covid/0.png", "covid/1.png", "covid/2.png",
                                                      "normal/0.png", "normal/1.png", "normal/broken.png"]
    assert json.loads(json.dumps(identity)) == identity  # a manifest holds it as it is


def test_the_identity_records_patterns_and_the_label_files_digest(raw, tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\ncovid/0.png,covid\nnormal/0.png,normal\n")
    identity = identity_of(raw, labels=labels, source_pattern=r"^(\w+)/", patient_pattern=r"(\d)\.png")
    assert identity["labels_file_sha256"] == hashlib.sha256(labels.read_bytes()).hexdigest()
    assert identity["source_pattern"] == r"^(\w+)/" and identity["patient_pattern"] == r"(\d)\.png"


def test_discovery_failures_are_part_of_the_identity(tmp_path):
    root = tmp_path / "raw"
    (root / "a").mkdir(parents=True)
    Image.fromarray(chest_phantom(20)).save(root / "a" / "x.png")
    (root / "a" / "bad\nname.png").write_bytes(b"x")  # a name no store can hold
    identity = identity_of(root)
    assert identity["discovery_failures"] == [list(f) for f in discover(root).failures]
    assert identity["discovery_failures"] and all(isinstance(f, list) for f in identity["discovery_failures"])


def describe(old, new):
    return convert_module._describe_difference(old, new)


def test_a_difference_names_each_setting_that_changed(raw):
    old = identity_of(raw)
    assert describe(old, old) == ""
    for key in ("input_root", "layout", "labels_file_sha256", "source_pattern", "patient_pattern",
                "class_names", "backend", "format_version"):
        assert describe(old, {**old, key: "other"}) == f"{key}: {old.get(key)!r} -> 'other'"
    new = identity_of(raw, options=dataclasses.replace(OPTIONS, size=32, fit="pad"),
                      params=PhaseParams(nscale=3))
    said = describe(old, new).split("; ")
    assert "options size: 16 -> 32" in said and "options fit: 'stretch' -> 'pad'" in said
    assert any(s.startswith("params nscale: ") and s.endswith(" -> 3") for s in said)
    fewer = {**old, "options": {k: v for k, v in old["options"].items() if k != "max_bytes"}}
    assert describe(fewer, old) == f"options max_bytes: None -> {OPTIONS.max_bytes!r}"


def test_a_difference_counts_files_added_removed_and_changed(raw):
    old = identity_of(raw)
    rows = old["listing"]
    changed = [rows[0][:5] + [rows[0][5] + 1, rows[0][6]]]
    new = {**old, "listing": changed + rows[1:4] + [[f"z/{k}.png", "z", "", "", "", 1, 1] for k in range(5)]}
    assert describe(old, new) == ("input files added: 5 (z/0.png, z/1.png, z/2.png, ...); "
                                  "input files removed: 2 (normal/1.png, normal/broken.png); "
                                  "input files changed: 1 (covid/0.png)")
    four = {**old, "listing": rows[4:]}
    assert describe(old, four) == "input files removed: 4 (covid/0.png, covid/1.png, covid/2.png, ...)"
    three = {**old, "listing": rows[3:]}
    assert describe(old, three) == "input files removed: 3 (covid/0.png, covid/1.png, covid/2.png)"
    smaller = {**old, "listing": [rows[0][:5] + [rows[0][5] - 1, rows[0][6]], *rows[1:]]}  # a file grown shorter
    assert describe(old, smaller) == "input files changed: 1 (covid/0.png)"


def test_an_equal_identity_read_back_from_a_manifest_has_no_difference(raw):
    old = identity_of(raw)
    assert describe(old, json.loads(json.dumps(old))) == ""


def test_a_difference_in_discovery_failures_alone_is_named(raw):
    old = identity_of(raw)
    assert describe(old, {**old, "discovery_failures": [["x.txt", "not an image"]]}) == "discovery failures differ"


def test_an_identity_digest_does_not_depend_on_key_order():
    assert identity_digest({"a": 1, "b": [1, 2]}) == identity_digest({"b": [1, 2], "a": 1})
    assert identity_digest({"a": 1}) != identity_digest({"a": 2})
    assert identity_digest({"a": 1}) == hashlib.sha256(b'{"a": 1}').hexdigest()


# --- checks before any work --------------------------------------------------------------------------

def test_an_output_in_a_missing_folder_is_refused(raw, tmp_path):
    with pytest.raises(ConvertError, match=rf"^output folder {tmp_path / 'no'} does not exist$"):
        convert_module._check_output(tmp_path / "no" / "s.h5", raw)


@pytest.mark.parametrize("where", ["covid/s.h5", "s.h5"])
def test_an_output_inside_the_input_is_refused(raw, where):
    with pytest.raises(ConvertError, match=r"is inside the input folder .*; write the store elsewhere"):
        convert_module._check_output(raw / where, raw)


def test_an_output_beside_the_input_with_a_similar_name_is_accepted(raw, tmp_path):
    convert_module._check_output(tmp_path / "raw.h5", raw)
    (tmp_path / "raw-stores").mkdir()  # a folder whose name begins with the input's is not inside it
    convert_module._check_output(tmp_path / "raw-stores" / "s.h5", raw)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw", "raw-stores"]  # the probes are gone
    assert list((tmp_path / "raw-stores").iterdir()) == []


def test_an_output_that_is_a_folder_is_refused(raw, tmp_path):
    (tmp_path / "s.h5").mkdir()
    with pytest.raises(ConvertError, match=rf"^{tmp_path / 's.h5'} is a folder; give the store's file name$"):
        convert_module._check_output(tmp_path / "s.h5", raw)


def test_an_output_whose_names_cannot_be_written_is_refused_before_any_work(raw, tmp_path, monkeypatch):
    import tempfile

    def too_long(**kwargs):
        raise OSError(errno.ENAMETOOLONG, "File name too long")

    monkeypatch.setattr(tempfile, "mkstemp", too_long)
    with pytest.raises(ConvertError, match=r"^cannot write beside .*s\.h5 \(File name too long\); choose another "
                                           "output folder or a shorter name$"):
        convert_module._check_output(tmp_path / "s.h5", raw)


def test_a_work_folder_that_cannot_be_made_is_refused(raw, tmp_path, monkeypatch):
    real = Path.mkdir

    def refuse(self, *args, **kwargs):
        if self.name.endswith(".parts"):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(ConvertError, match=r"\(Permission denied\)"):
        convert_module._check_output(tmp_path / "s.h5", raw)
    monkeypatch.undo()
    (tmp_path / "s.h5.parts").mkdir()
    monkeypatch.setattr(Path, "mkdir", refuse)
    convert_module._check_output(tmp_path / "s.h5", raw)  # an existing work folder is not made again
    assert (tmp_path / "s.h5.parts").is_dir()


def test_an_input_that_cannot_be_resolved_is_not_inside(raw, tmp_path, monkeypatch):
    real = Path.resolve

    def failing(self, *args, **kwargs):
        if self == raw:
            raise OSError(errno.ELOOP, "Too many levels of symbolic links")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "resolve", failing)
    convert_module._check_output(tmp_path / "s.h5", raw)


def fake_system(monkeypatch, meminfo=None, limit=None, current=None):
    """/proc/meminfo and the cgroup's memory files as given (None: missing)."""
    real_read = Path.read_text

    def fake_open(path, *args, **kwargs):
        if path == "/proc/meminfo" and meminfo is not None:
            import io

            return io.StringIO(meminfo)
        raise FileNotFoundError(path)

    def read_text(self, *args, **kwargs):
        files = {"/sys/fs/cgroup/memory.max": limit, "/sys/fs/cgroup/memory.current": current}
        if str(self) in files:
            if files[str(self)] is None:
                raise FileNotFoundError(str(self))
            return files[str(self)]
        return real_read(self, *args, **kwargs)

    monkeypatch.setattr(convert_module, "open", fake_open, raising=False)
    monkeypatch.setattr(Path, "read_text", read_text)


MEMINFO = "MemTotal:       24000000 kB\nMemFree:         1000 kB\nMemAvailable:   2000000 kB\nBuffers: 1 kB\n"


@pytest.mark.parametrize(("meminfo", "limit", "current", "expected"), [
    (MEMINFO, None, None, 2000000 * 1024),
    (MEMINFO, "max\n", "5", 2000000 * 1024),
    (MEMINFO, "1000000000\n", "400000000\n", 600000000),  # the cgroup leaves less
    (MEMINFO, "100000000000\n", "0", 2000000 * 1024),  # the machine leaves less
    (None, "1000000000", "1", 999999999),
    (None, None, None, None),
    ("MemTotal: 1 kB\n", None, None, None),
    ("MemAvailable: lots kB\n", "garbage", "1", None),
    (MEMINFO, "1000", None, 2000000 * 1024),  # a limit without a usage is not a figure
])
def test_available_memory_is_the_smaller_of_the_machines_and_the_cgroups(monkeypatch, meminfo, limit, current,
                                                                         expected):
    fake_system(monkeypatch, meminfo, limit, current)
    assert available_memory() == expected


def test_a_conversion_that_cannot_fit_in_memory_is_refused(monkeypatch):
    options = ConvertOptions(size=299, piece_size=10)
    need = convert_module.conversion_memory(options, 2)
    monkeypatch.setattr(convert_module, "available_memory", lambda: need - 1)
    with pytest.raises(ConvertError) as raised:
        convert_module._check_memory(options, 2)
    gb = 1024 ** 3
    assert str(raised.value) == (f"--size 299 needs about {need / gb:.1f} GB of memory (10 images per piece x 2 "
                                 f"workers, estimated), {(need - 1) / gb:.1f} GB are available; lower --size, "
                                 "--piece-size or --workers")
    monkeypatch.setattr(convert_module, "available_memory", lambda: need)
    convert_module._check_memory(options, 2)
    monkeypatch.setattr(convert_module, "available_memory", lambda: None)
    convert_module._check_memory(options, 2)


def test_one_worker_and_an_automatic_piece_size_are_said_so(monkeypatch):
    monkeypatch.setattr(convert_module, "available_memory", lambda: 1)
    with pytest.raises(ConvertError, match=rf"\({MAX_PIECE} images per piece x 1 worker, estimated\)"):
        convert_module._check_memory(ConvertOptions(), 1)


# --- the lock, leftovers and the work folder -----------------------------------------------------

def test_the_lock_says_who_holds_it(tmp_path):
    work = tmp_path / "a" / "s.h5.parts"
    with convert_module._locked(work):
        assert (work / ".lock").read_text() == f"process {os.getpid()}"
        with pytest.raises(ConvertError, match=rf"^the output is locked by process {os.getpid()}: a conversion of "
                                               "the same output is running; wait for it to finish$"):
            with convert_module._locked(work):
                pass
    with convert_module._locked(work):  # free again, and its old text replaced
        assert (work / ".lock").read_text() == f"process {os.getpid()}"


def test_a_lock_without_a_holders_name_says_another_process(tmp_path):
    import fcntl

    work = tmp_path / "w"
    work.mkdir()
    (work / ".lock").write_text("")
    with open(work / ".lock") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(ConvertError, match="^the output is locked by another process: "):
            with convert_module._locked(work):
                pass


def test_a_long_holder_text_is_replaced_whole(tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    (work / ".lock").write_text("process 123456789 and more text")
    with convert_module._locked(work):
        assert (work / ".lock").read_text() == f"process {os.getpid()}"


def test_the_leftovers_of_a_killed_run_are_removed_and_nothing_else(tmp_path):
    out = tmp_path / "s[1].h5"
    for name in (".s[1].h5.abc.partial", ".s[1].h5.shards.partial"):
        (tmp_path / name).write_text("x") if "abc" in name else (tmp_path / name).mkdir()
    (tmp_path / ".s[1].h5.shards.partial" / "shard.h5").write_text("x")
    keep = [".other.h5.abc.partial", "s[1].h5.parts", ".s[1].h5.abc.partial.keep", ".s1.h5.x.partial"]
    for name in keep:
        (tmp_path / name).write_text("x")
    convert_module._remove_leftovers(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)


def test_clearing_the_work_folder_keeps_its_lock(tmp_path):
    (tmp_path / ".lock").write_text("process 1")
    (tmp_path / ".DS_Store").write_text("a stray file that sorts before the lock")
    (tmp_path / "piece-000000.npz").write_text("x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "f").write_text("x")
    convert_module._clear(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [".lock"]


def prepared(work, identity, overwrite=False):
    convert_module._prepare_work_dir(work.with_suffix(""), work, identity, overwrite)
    return sorted(p.name for p in work.iterdir())


def test_a_new_work_folder_gets_a_manifest(tmp_path):
    work = tmp_path / "s.h5.parts"
    work.mkdir()
    (work / "piece-000000.npz").write_text("from nobody")
    assert prepared(work, {"a": 1}) == ["manifest.json"]
    assert json.loads((work / "manifest.json").read_text()) == {"a": 1}


def test_the_same_conversion_keeps_its_pieces(tmp_path):
    work = tmp_path / "s.h5.parts"
    work.mkdir()
    assert prepared(work, {"a": 1}) == ["manifest.json"]
    (work / "piece-000000.npz").write_text("finished")
    assert prepared(work, {"a": 1}) == ["manifest.json", "piece-000000.npz"]
    assert prepared(work, {"a": 1}, overwrite=True) == ["manifest.json", "piece-000000.npz"]


def test_another_conversion_is_refused_or_started_over(tmp_path):
    work = tmp_path / "s.h5.parts"
    work.mkdir()
    prepared(work, {"backend": "numpy"})
    (work / "piece-000000.npz").write_text("finished")
    with pytest.raises(ConvertError, match=rf"^an unfinished conversion in {work} used different settings or input "
                                           r"\(backend: 'numpy' -> 'cupy'\); rerun with the same ones to resume, or "
                                           "pass --overwrite to start over$"):
        prepared(work, {"backend": "cupy"})
    assert json.loads((work / "manifest.json").read_text()) == {"backend": "numpy"}
    assert prepared(work, {"backend": "cupy"}, overwrite=True) == ["manifest.json"]
    assert json.loads((work / "manifest.json").read_text()) == {"backend": "cupy"}


@pytest.mark.parametrize("content", ["{half", "[1, 2]", "null", "\udcff"])
def test_a_damaged_manifest_is_as_if_nothing_had_finished(tmp_path, content):
    work = tmp_path / "s.h5.parts"
    work.mkdir()
    (work / "manifest.json").write_bytes(content.encode(errors="surrogateescape"))
    (work / "piece-000000.npz").write_text("of an unknown conversion")
    assert prepared(work, {"a": 1}) == ["manifest.json"]
    assert json.loads((work / "manifest.json").read_text()) == {"a": 1}


def test_there_must_be_room_for_an_uncompressed_store(tmp_path, monkeypatch):
    piece = tmp_path / "p.npz"
    piece.write_bytes(b"x" * 1000)
    need = 1000 + 2**20
    monkeypatch.setattr(convert_module.shutil, "disk_usage", lambda path: types.SimpleNamespace(free=10.6 * 2**20))
    with pytest.raises(DiskFullError, match=r"^the store needs about 12 MB .*, 11 MB are free"):
        convert_module._check_room(tmp_path / "s.h5", [piece] * 11200, "none")  # 11.7 MB with the margin
    monkeypatch.setattr(convert_module.shutil, "disk_usage", lambda path: types.SimpleNamespace(free=need - 1))
    with pytest.raises(DiskFullError) as raised:
        convert_module._check_room(tmp_path / "s.h5", [piece], "none")
    assert str(raised.value) == (f"the store needs about 1 MB next to {tmp_path / 's.h5'}, 1 MB are free; free some "
                                 "space (or pass --compression gzip) and rerun the same command: it resumes from "
                                 "the finished pieces")
    convert_module._check_room(tmp_path / "s.h5", [piece], "gzip")  # its size is not known in advance
    big = tmp_path / "big.npz"
    with open(big, "wb") as handle:
        handle.truncate(3 * 2**19)  # 1.5 MiB: the 1 MiB margin is added, not or-ed in
    monkeypatch.setattr(convert_module.shutil, "disk_usage", lambda path: types.SimpleNamespace(free=2 * 2**20))
    with pytest.raises(DiskFullError, match="needs about 2 MB"):
        convert_module._check_room(tmp_path / "s.h5", [big], "none")
    monkeypatch.setattr(convert_module.shutil, "disk_usage", lambda path: types.SimpleNamespace(free=need))
    convert_module._check_room(tmp_path / "s.h5", [piece], "none")


def test_library_versions_name_what_is_installed(monkeypatch):
    from importlib import metadata

    versions = convert_module._library_versions()
    assert versions["numpy"] == np.__version__ and versions["h5py"] == metadata.version("h5py")
    assert set(versions) <= {"phasefeat", "numpy", "scipy", "numba", "h5py", "pillow", "pydicom", "cupy-cuda12x"}
    real = metadata.version

    def without_h5py(name):
        if name == "h5py":
            raise metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(metadata, "version", without_h5py)
    versions = convert_module._library_versions()
    assert "h5py" not in versions and versions["numpy"] == np.__version__


def test_forgetting_removes_only_a_work_folder_this_command_made_without_pieces(tmp_path):
    work = tmp_path / "w"
    convert_module._forget(work, False)  # none: nothing to do
    work.mkdir()
    (work / ".lock").write_text("")
    convert_module._forget(work, True)
    assert work.is_dir()
    (work / "piece-000000.npz").write_text("")
    convert_module._forget(work, False)
    assert work.is_dir()
    (work / "piece-000000.npz").unlink()
    convert_module._forget(work, False)
    assert not work.exists()


# --- pieces in this process --------------------------------------------------------------------------

class Counting:
    def __init__(self):
        self.ticks, self.restarts = collections.Counter(), []

    def tick(self, piece_id):
        self.ticks[piece_id] += 1

    def restart(self, piece_id):
        self.restarts.append(piece_id)


def test_pieces_in_this_process_run_in_order_and_tick_per_file(monkeypatch):
    from phasefeat.io import pieces as pieces_module

    def process(task):
        for _ in task["entries"]:
            pieces_module._progress(task["piece_id"])
        return task["piece_id"]

    monkeypatch.setattr(convert_module, "process_piece", process)
    done, progress = [], Counting()
    tasks = [{"piece_id": k, "entries": [1] * (k + 1)} for k in range(3)]
    convert_module._run_pieces(tasks, 1, done.append, progress)
    assert done == [0, 1, 2] and progress.ticks == {0: 1, 1: 2, 2: 3}
    assert pieces_module._progress is None
    convert_module._run_pieces(tasks[:1], 4, done.append, progress)  # one piece: no pool for it
    assert done == [0, 1, 2, 0]


def test_the_progress_hook_is_removed_when_a_piece_fails(monkeypatch):
    from phasefeat.io import pieces as pieces_module

    monkeypatch.setattr(convert_module, "process_piece", lambda task: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        convert_module._run_pieces([{"piece_id": 0}], 1, print, Counting())
    assert pieces_module._progress is None
    report_progress_to(None)


class FakePool:
    """A pool whose results are computed at once; ``deaths`` counts how many pools lose a worker at the
    first wait for a result (after ``finish_first`` results were handed out, and those of ``also_ready``)."""

    deaths, made, finish_first, also_ready = 0, [], 0, ()

    def __init__(self, workers, initializer=None, initargs=()):
        self._pool = [types.SimpleNamespace(pid=1000 + k) for k in range(workers)]
        self.initargs, self.in_flight, self.most, self.given = initargs, 0, 0, 0
        self.dies = FakePool.deaths > 0
        FakePool.deaths -= 1
        FakePool.made.append(self)

    def apply_async(self, fn, args):
        pool, task = self, args[0]
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        finished = not self.dies or self.given < FakePool.finish_first or task["piece_id"] in FakePool.also_ready
        self.given += 1

        class Result:
            def ready(self):
                return finished

            def wait(self, timeout):
                if pool.dies:
                    pool._pool = [types.SimpleNamespace(pid=p.pid + 100) for p in pool._pool]

            def get(self):
                pool.in_flight -= 1
                return task["piece_id"]

        return Result()


@pytest.fixture
def fake_pool(monkeypatch):
    FakePool.deaths, FakePool.made, FakePool.finish_first, FakePool.also_ready = 0, [], 0, ()
    stopped = []
    monkeypatch.setattr(convert_module, "_stop_pool", lambda pool, died: stopped.append(died))
    return types.SimpleNamespace(context=types.SimpleNamespace(Pool=FakePool), stopped=stopped)


def pool_tasks(n):
    return [{"piece_id": k, "entries": [(k, f"img{k}.png", 0, "", "")]} for k in range(n)]


def test_a_pool_keeps_two_pieces_per_worker_in_flight_and_returns_all_in_order(fake_pool):
    done = []
    convert_module._pool_pieces(pool_tasks(9), 2, done.append, Counting(), fake_pool.context, None)
    assert done == list(range(9)) and FakePool.made[0].most == 4
    assert fake_pool.stopped == [False] and len(FakePool.made) == 1


def test_a_worker_that_dies_costs_only_the_pieces_it_had_in_flight(fake_pool, caplog):
    FakePool.deaths, FakePool.finish_first = 1, 1
    done, progress = [], Counting()
    with caplog.at_level(logging.WARNING, logger="phasefeat"):
        convert_module._pool_pieces(pool_tasks(5), 2, done.append, progress, fake_pool.context, None)
    assert sorted(done) == list(range(5)) and done.count(0) == 1
    assert progress.restarts == [1, 2, 3, 4]  # in flight when the worker died; the first had finished
    assert fake_pool.stopped == [True, False] and len(FakePool.made) == 2
    assert caplog.messages == ["a worker process died; 4 piece(s) start again"]


def test_a_piece_is_started_three_times_and_the_message_counts_its_starts(fake_pool):
    """Decided: a piece whose worker dies starts again, three starts in all; the third death stops the
    conversion, and the message says how many times that piece's worker died (its starts, counted)."""
    FakePool.deaths = 10
    done = []
    with pytest.raises(ConvertError) as caught:
        convert_module._pool_pieces(pool_tasks(3), 2, done.append, Counting(), fake_pool.context, None)
    assert str(caught.value) == (
        "a worker process died 3 times while converting piece 0 (from img0.png): most often the memory ran out "
        "(features at the native resolution need about 170 bytes per pixel); finished pieces are kept: lower "
        "--workers or --piece-size, or pass --features-at, and rerun the same command")
    assert len(FakePool.made) == 3 and fake_pool.stopped == [True] * 3 and done == []


def test_after_a_worker_died_the_next_pool_can_send_ticks(fake_pool):
    """A worker that died holding the progress queue's write lock would silence every later worker's
    ticks (their puts wait for the lock forever): once a pool has stopped, the lock is free again."""
    FakePool.deaths = 10
    abandoned = threading.Lock()
    abandoned.acquire()  # as a worker killed in the middle of a put leaves it
    ticks = types.SimpleNamespace(_wlock=abandoned)
    with pytest.raises(ConvertError):
        convert_module._pool_pieces(pool_tasks(1), 2, print, Counting(), fake_pool.context, ticks)
    assert not abandoned.locked()
    assert FakePool.made[0].initargs == (ticks,)


def test_an_abandoned_lock_is_freed_and_a_free_one_stays_free():
    lock = threading.Lock()
    convert_module._free_abandoned(lock)
    assert not lock.locked()
    lock.acquire()
    convert_module._free_abandoned(lock)
    assert not lock.locked()
    convert_module._free_abandoned(None)


def test_a_result_is_waited_for_until_a_worker_changes(monkeypatch):
    pool = types.SimpleNamespace(_pool=[types.SimpleNamespace(pid=1)])
    waits = []

    class Slow:
        def ready(self):
            return len(waits) >= 3

        def wait(self, timeout):
            waits.append(timeout)

        def get(self):
            return "piece"

    assert convert_module._result_of(pool, Slow(), {1}) == "piece" and waits == [0.5] * 3
    waits.clear()
    pool._pool = [types.SimpleNamespace(pid=2)]
    with pytest.raises(convert_module._WorkerDied):
        convert_module._result_of(pool, Slow(), {1})
    assert convert_module._worker_pids(pool) == {2}


def test_a_pool_is_unjammed_only_after_a_worker_died(monkeypatch):
    calls = []
    monkeypatch.setattr(convert_module, "_unjam", lambda pool: calls.append("unjam"))
    pool = types.SimpleNamespace(terminate=lambda: calls.append("terminate"), join=lambda: calls.append("join"))
    convert_module._stop_pool(pool, False)
    assert calls == ["terminate", "join"]
    convert_module._stop_pool(pool, True)
    assert calls == ["terminate", "join", "unjam", "terminate", "join"]


def test_unjamming_kills_every_worker_and_frees_both_queues():
    killed, joined = [], []
    workers = [types.SimpleNamespace(kill=lambda k=k: killed.append(k), join=lambda k=k: joined.append(k))
               for k in range(2)]
    read, write = threading.Lock(), threading.Lock()
    read.acquire()
    write.acquire()
    pool = types.SimpleNamespace(_worker_handler=types.SimpleNamespace(_state="RUN"), _pool=workers,
                                 _inqueue=types.SimpleNamespace(_rlock=read),
                                 _outqueue=types.SimpleNamespace(_wlock=write))
    convert_module._unjam(pool)
    assert pool._worker_handler._state == "TERMINATE" and killed == [0, 1] and joined == [0, 1]
    assert not read.locked() and not write.locked()
    pool._outqueue = types.SimpleNamespace()  # a queue without a write lock
    convert_module._unjam(pool)


# --- whole conversions in this process ----------------------------------------------------------------

def test_a_conversion_writes_the_store_and_says_what_it_did(raw, tmp_path, in_process):
    out = tmp_path / "s.h5"
    summary = run(raw, out, command_line="phasefeat convert raw s.h5")
    assert (summary.output, summary.discovered, summary.converted, summary.failed) == (out, 6, 5, 1)
    assert summary.failures_by_reason == {"truncated or corrupt PNG": 1}
    assert summary.resumed_pieces == 0 and summary.backend == "numpy" and not summary.already_complete
    assert summary.seconds > 0 and summary.images_per_second == summary.converted / summary.seconds
    assert in_process == [3]  # 6 files in pieces of 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw", "s.h5"]
    with open_store(out) as store:
        attrs = store.attrs
        assert len(store) == 5 and store.class_names == ["covid", "normal"]
        assert store.source_paths == ["covid/0.png", "covid/1.png", "covid/2.png", "normal/0.png", "normal/1.png"]
        assert [p for p, _ in store.failures] == ["normal/broken.png"]
    assert attrs["command_line"] == "phasefeat convert raw s.h5" and attrs["engine"] == "local"
    assert attrs["size"] == 16 and attrs["fit"] == "stretch" and attrs["features_at"] == "store size"
    assert attrs["compression"] == "none" and attrs["discovered"] == 6 and attrs["layout"] == "class-folders"
    assert attrs["input_root"] == str(raw.resolve()) and attrs["backend"] == "numpy"
    assert attrs["cxr_dtype"] == attrs["enh_dtype"] == "uint8" and attrs["preset"] == PhaseParams().preset_name()
    assert attrs["params_json"] == PhaseParams().to_json() and attrs["params_digest"] == PhaseParams().digest()
    assert attrs["source_pattern"] == "" and attrs["patient_pattern"] == ""
    assert json.loads(attrs["library_versions"])["numpy"] == np.__version__
    assert attrs["created"][:2] == "20" and "T" in attrs["created"]
    identity = identity_of(raw, options=OPTIONS)
    assert attrs["conversion_identity"] == identity_digest(identity)


def test_the_images_per_second_of_no_time_is_not_a_number(tmp_path):
    summary = convert_module.ConvertSummary(tmp_path, 1, 1, 0, {}, 0.0, 0, "numpy", "CPU")
    assert np.isnan(summary.images_per_second)


def test_a_conversion_resumes_from_its_finished_pieces(raw, tmp_path, in_process, monkeypatch):
    out = tmp_path / "s.h5"
    real = convert_module.process_piece

    def second_piece_killed(task):
        if task["piece_id"] == 1:
            raise KeyboardInterrupt
        return real(task)

    monkeypatch.setattr(convert_module, "process_piece", second_piece_killed)
    with pytest.raises(KeyboardInterrupt):
        run(raw, out)
    work = tmp_path / "s.h5.parts"
    assert sorted(p.name for p in work.iterdir()) == [".lock", "manifest.json", "piece-000000.npz"]
    monkeypatch.setattr(convert_module, "process_piece", real)
    summary = run(raw, out)
    assert summary.resumed_pieces == 1 and summary.converted == 5
    whole = tmp_path / "whole.h5"
    run(raw, whole)
    with open_store(out) as a, open_store(whole) as b:
        assert np.array_equal(a.read_many(list(range(5)), "enh"), b.read_many(list(range(5)), "enh"))


def test_options_and_arguments_are_checked_before_any_work(raw, tmp_path):
    with pytest.raises(ConvertError, match=r"^compression must be one of \['none', 'lzf', 'gzip'\], got 'zip'$"):
        run(raw, tmp_path / "s.h5", compression="zip")
    with pytest.raises(ConvertError, match=rf"^input folder {tmp_path / 'none'} does not exist or is not a folder$"):
        run(tmp_path / "none", tmp_path / "s.h5")
    (tmp_path / "s.h5").write_text("x")
    with pytest.raises(ConvertError, match=rf"^{tmp_path / 's.h5'} already exists; pass --overwrite to replace it$"):
        run(raw, tmp_path / "s.h5")
    with pytest.raises(ConvertError, match=r"^cannot write beside .* \(File name too long\)"):
        run(raw, tmp_path / ("x" * 300 + ".h5"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw", "s.h5"]


def test_memory_is_checked_only_for_local_pieces(raw, tmp_path, monkeypatch):
    checked = []
    monkeypatch.setattr(convert_module, "_check_memory", lambda options, workers: checked.append(workers))
    monkeypatch.setattr(convert_module, "discover", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        run(raw, tmp_path / "s.h5", workers=3)
    with pytest.raises(KeyboardInterrupt):
        run(raw, tmp_path / "s.h5", scheduler="local:1")
    assert checked == [3]


def test_an_overwrite_replaces_the_store(raw, tmp_path, in_process):
    out = tmp_path / "s.h5"
    run(raw, out, options=dataclasses.replace(OPTIONS, size=8))
    summary = run(raw, out, overwrite=True)
    assert summary.converted == 5
    with open_store(out) as store:
        assert store.attrs["size"] == 16


def test_a_store_finished_by_a_run_killed_while_it_cleaned_up_is_complete(raw, tmp_path, in_process):
    out = tmp_path / "s.h5"
    run(raw, out)
    work = tmp_path / "s.h5.parts"
    work.mkdir()
    (work / "piece-000000.npz").write_text("left over")
    summary = run(raw, out)
    assert summary.already_complete and summary.converted == 5 and summary.failed == 1
    assert summary.failures_by_reason == {"truncated or corrupt PNG": 1} and summary.resumed_pieces == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw", "s.h5"]


@pytest.mark.parametrize("resumable", [False, True])
def test_an_older_store_beside_an_unfinished_conversion_is_not_mistaken_for_it(raw, tmp_path, in_process,
                                                                              resumable):
    out = tmp_path / "s.h5"
    run(raw, out, options=dataclasses.replace(OPTIONS, size=8))
    work = tmp_path / "s.h5.parts"
    work.mkdir()
    if resumable:
        disc = discover(raw)
        options = OPTIONS.with_piece_size_for(len(disc.samples))
        identity = convert_module._identity(disc, PhaseParams(), options, "numpy", None)
        (work / "manifest.json").write_text(json.dumps(identity))
    with pytest.raises(ConvertError) as raised:
        run(raw, out)
    said = str(raised.value)
    assert said.startswith(f"{out} already exists and was not made by this command (other input or settings, or an "
                           f"earlier version); {work} holds an unfinished conversion")
    if resumable:
        assert said.endswith(" of this command: pass --overwrite to replace the store, resuming from the finished "
                             "pieces")
    else:
        assert said.endswith(f"{work} holds an unfinished conversion: pass --overwrite to replace the store")
    assert work.is_dir()


def test_a_damaged_store_beside_a_work_folder_is_not_complete(raw, tmp_path, in_process):
    out = tmp_path / "s.h5"
    out.write_bytes(b"not a store")
    (tmp_path / "s.h5.parts").mkdir()
    with pytest.raises(ConvertError, match="already exists and was not made by this command"):
        run(raw, out)


def test_a_store_finished_meanwhile_is_not_replaced(raw, tmp_path, in_process, monkeypatch):
    out = tmp_path / "s.h5"
    real = convert_module._remove_leftovers

    def finished_by_another(output):
        output.write_text("another conversion's store")
        real(output)

    monkeypatch.setattr(convert_module, "_remove_leftovers", finished_by_another)
    with pytest.raises(ConvertError, match="already exists; pass --overwrite to replace it"):
        run(raw, out)
    assert out.read_text() == "another conversion's store"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw", "s.h5"]


def test_a_full_disk_is_one_line_and_keeps_the_finished_pieces(raw, tmp_path, monkeypatch):
    def full(output, piece_paths, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(convert_module, "_assemble_apart", full)
    with pytest.raises(DiskFullError, match=rf"^disk full while writing next to {tmp_path / 's.h5'}; free some space "
                                            "and rerun the same command: it resumes from the finished pieces$"):
        run(raw, tmp_path / "s.h5")
    assert len(list((tmp_path / "s.h5.parts").glob("piece-*.npz"))) == 3


def test_other_os_errors_pass_through_and_a_failure_before_any_piece_leaves_nothing(raw, tmp_path, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(convert_module, "_prepare_work_dir", denied)
    with pytest.raises(PermissionError):
        run(raw, tmp_path / "s.h5")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]


def test_a_work_folder_that_was_there_is_kept_after_a_failure(raw, tmp_path, monkeypatch):
    (tmp_path / "s.h5.parts").mkdir()
    monkeypatch.setattr(convert_module, "_convert", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        run(raw, tmp_path / "s.h5")
    assert (tmp_path / "s.h5.parts").is_dir()


def test_the_features_are_finished_in_this_process_for_a_gpu_backend(raw, tmp_path, in_process, monkeypatch):
    finished = []
    real = convert_module.finish_piece

    def finishing(piece, task, backend):
        finished.append((backend, "features" in piece, task["batch_size"], task["enhance_here"]))
        return real(piece, task, "numpy")

    monkeypatch.setattr(convert_module, "finish_piece", finishing)
    fake = types.SimpleNamespace(name="cupy", device="stand-in GPU")
    monkeypatch.setattr("phasefeat.backend.get_backend", lambda name: fake)
    summary = run(raw, tmp_path / "s.h5", batch_size=7)
    assert finished == [("cupy", True, 7, False)] * 3
    assert summary.backend == "cupy" and summary.device == "stand-in GPU"
    with open_store(tmp_path / "s.h5") as gpu:
        enh = gpu.read_many(list(range(5)), "enh")
        assert gpu.attrs["backend"] == "cupy" and gpu.attrs["device"] == "stand-in GPU"
    monkeypatch.undo()
    monkeypatch.setattr(convert_module, "_assemble_apart", assemble)
    run(raw, tmp_path / "cpu.h5")
    with open_store(tmp_path / "cpu.h5") as cpu:
        assert np.array_equal(cpu.read_many(list(range(5)), "enh"), enh)


def test_the_piece_tasks_carry_what_a_worker_needs(raw, tmp_path, in_process, monkeypatch):
    seen = []
    monkeypatch.setattr(convert_module, "_run_pieces", lambda tasks, workers, on_result, progress: seen.extend(
        (tasks, workers)) or [on_result(convert_module.process_piece(t)) for t in tasks])
    run(raw, tmp_path / "s.h5", workers=2, batch_size=5)
    tasks, workers = seen
    assert workers == 2 and [t["piece_id"] for t in tasks] == [0, 1, 2]
    assert tasks[0]["root"] == str(raw) and tasks[0]["options"] == dataclasses.asdict(OPTIONS)
    assert tasks[0]["params_json"] == PhaseParams().to_json() and tasks[0]["enhance_here"] is True
    assert tasks[0]["batch_size"] == 5
    assert tasks[0]["entries"] == [(0, "covid/0.png", 0, "", "", ""), (1, "covid/1.png", 0, "", "", "")]
    assert tasks[2]["entries"] == [(4, "normal/1.png", 1, "", "", ""), (5, "normal/broken.png", 1, "", "", "")]


def test_an_automatic_piece_size_is_chosen_from_the_image_count(raw, tmp_path, in_process):
    run(raw, tmp_path / "s.h5", options=dataclasses.replace(OPTIONS, piece_size=None))
    assert in_process == [2]  # 6 files, at least 4 per piece


# --- the assembly's own process -----------------------------------------------------------------------

def small_piece(tmp_path):
    piece = {"labels": np.zeros(1, np.int32), "source_path": np.array(["a.png"]), "patient_id": np.array([""]),
             "source": np.array([""]), "sha256": np.array(["0" * 64]), "orig_width": np.ones(1, np.int32),
             "orig_height": np.ones(1, np.int32), "orig_mode": np.array(["L"]),
             "cxr": np.zeros((1, 8, 8, 1), np.uint8), "enh": np.zeros((1, 8, 8, 3), np.uint8)}
    write_piece(tmp_path / "p.npz", piece)
    return [tmp_path / "p.npz"]


ASSEMBLY = {"shape": (8, 8), "cxr_dtype": "uint8", "enh_dtype": "uint8", "class_names": ["a"], "failures": []}


class DiesWhenUnpickled:
    """Unpickling this ends the process that does it: a worker killed in the middle of the assembly."""

    def __reduce__(self):
        return os._exit, (9,)


@pytest.fixture
def stopped_pools(monkeypatch):
    """How the assembly's pool was stopped: its worker count, and whether it was unjammed first."""
    stops, real = [], convert_module._stop_pool
    monkeypatch.setattr(convert_module, "_stop_pool", lambda pool, died: stops.append((len(pool._pool), died))
                        or real(pool, died))
    return stops


def test_the_store_is_assembled_in_a_process_of_its_own(tmp_path, stopped_pools):
    paths = small_piece(tmp_path)
    assert convert_module._assemble_apart(tmp_path / "s.h5", paths, attrs={"k": "v"}, **ASSEMBLY) == 1
    assert stopped_pools == [(1, False)]  # one process, stopped as it is
    with open_store(tmp_path / "s.h5") as store:
        assert len(store) == 1 and store.attrs["k"] == "v"


@pytest.mark.parametrize("free", [2**20 - 1, 2**20, 2**30])
def test_an_assembly_process_that_dies_is_one_line_or_a_full_disk(tmp_path, monkeypatch, free, stopped_pools):
    paths = small_piece(tmp_path)
    monkeypatch.setattr(convert_module.shutil, "disk_usage", lambda path: types.SimpleNamespace(free=free))
    if free < 2**20:
        with pytest.raises(OSError, match="No space left on device") as raised:
            convert_module._assemble_apart(tmp_path / "s.h5", paths, attrs={"x": DiesWhenUnpickled()}, **ASSEMBLY)
        assert raised.value.errno == errno.ENOSPC
    else:
        with pytest.raises(ConvertError, match=rf"^the process assembling {tmp_path / 's.h5'} ended unexpectedly "
                                               r"\(killed, or out of memory\); the finished pieces are kept: rerun "
                                               "the same command$"):
            convert_module._assemble_apart(tmp_path / "s.h5", paths, attrs={"x": DiesWhenUnpickled()}, **ASSEMBLY)
    assert not (tmp_path / "s.h5").exists()
    assert stopped_pools == [(1, True)]  # unjammed before it is stopped: a dead worker may hold a lock


def test_an_abandoned_lock_is_waited_for_at_most_a_fraction_of_a_second():
    class Recording:
        timeouts = []

        def acquire(self, timeout):
            self.timeouts.append(timeout)
            return False

        def release(self):
            pass

    lock = Recording()
    convert_module._free_abandoned(lock)
    assert lock.timeouts and 0 < lock.timeouts[0] <= 0.5


def test_a_conversion_shows_its_progress_unless_told_not_to(raw, tmp_path, in_process, capsys):
    convert(raw, tmp_path / "a.h5", options=OPTIONS, backend="numpy")
    assert "convert:" in capsys.readouterr().err
    convert(raw, tmp_path / "b.h5", options=OPTIONS, backend="numpy", progress=False)
    assert "convert:" not in capsys.readouterr().err


def test_the_times_logged_and_summed_are_durations(raw, tmp_path, in_process, caplog):
    with caplog.at_level(logging.INFO, logger="phasefeat"):
        summary = run(raw, tmp_path / "s.h5")
    discovery = next(m for m in caplog.messages if m.startswith("discovery: "))
    assert discovery.startswith("discovery: 6 files (0 already failed) in ")
    assert 0 <= float(discovery.split(" in ")[1].split()[0]) < 0.5
    assert 0 < summary.seconds < 30
    (tmp_path / "s.h5.parts").mkdir()  # a run killed while it cleaned up: the store is complete
    again = run(raw, tmp_path / "s.h5")
    assert again.already_complete and 0 < again.seconds < 0.5


def test_the_pieces_time_is_the_time_they_took(raw, tmp_path, in_process, monkeypatch, caplog):
    import time as real_time

    # 0.7 x 2^k: a reading's remainder by an earlier one is 0, a quotient is a power of two, a product is
    # no gap, and 6 images over a gap is no whole number
    readings = []

    def clock():
        readings.append(0.7 * 2.0 ** len(readings))
        return readings[-1]

    monkeypatch.setattr(convert_module, "time", types.SimpleNamespace(perf_counter=clock,
                                                                      strftime=real_time.strftime))
    with caplog.at_level(logging.INFO, logger="phasefeat"):
        summary = run(raw, tmp_path / "s.h5")
    gaps = {b - a for a, b in zip(readings, readings[1:], strict=False)}
    pieces = next(m for m in caplog.messages if m.startswith("pieces: "))
    seconds = float(pieces.split(" in ")[1].split()[0])
    assert pieces.startswith("pieces: 3 of 3 in ") and seconds in gaps
    assert pieces.endswith(f"({6 / seconds:.1f} images/s; 0 finished earlier)")
    assembly = next(m for m in caplog.messages if m.startswith("assembly: "))
    assert assembly.startswith(f"assembly: 5 samples into {tmp_path / 's.h5'} in ")
    assert float(assembly.split(" in ")[1].split()[0]) in gaps
    assert summary.seconds == readings[-1] - readings[0]
    discovery = next(m for m in caplog.messages if m.startswith("discovery: "))
    assert float(discovery.split(" in ")[1].split()[0]) in gaps
    (tmp_path / "s.h5.parts").mkdir()  # killed while it cleaned up: complete, and timed alike
    readings.clear()
    again = run(raw, tmp_path / "s.h5")
    assert again.already_complete and again.seconds == readings[-1] - readings[0]


@pytest.mark.parametrize("name", ["batch_size", "workers"])
@pytest.mark.parametrize("value", [0, -1, True, 2.0])
def test_a_batch_size_or_worker_count_below_one_is_refused_before_any_work(raw, tmp_path, name, value):
    with pytest.raises(ConvertError, match=rf"^{name} must be a positive integer, got {value!r}$"):
        run(raw, tmp_path / "s.h5", **{name: value})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]


def test_a_leftover_removed_meanwhile_is_not_an_error(tmp_path, monkeypatch):
    gone = tmp_path / ".s.h5.abc.partial"
    monkeypatch.setattr(Path, "glob", lambda self, pattern: iter([gone]))  # listed, then removed by another
    convert_module._remove_leftovers(tmp_path / "s.h5")
    assert not gone.exists()


def test_several_pieces_and_workers_go_to_a_pool(monkeypatch):
    used = []
    monkeypatch.setattr(convert_module, "_pool_pieces", lambda tasks, workers, *a: used.append((len(tasks), workers)))
    monkeypatch.setattr(convert_module, "process_piece", lambda task: used.append("here"))
    convert_module._run_pieces(pool_tasks(3), 4, print, Counting())
    assert used == [(3, 3)]  # no more workers than pieces
    convert_module._run_pieces(pool_tasks(2), 4, print, Counting())
    assert used == [(3, 3), (2, 2)]
    convert_module._run_pieces(pool_tasks(3), 2, print, Counting())
    assert used == [(3, 3), (2, 2), (3, 2)]
    used.remove((3, 2))
    convert_module._run_pieces(pool_tasks(3), 1, print, Counting())
    assert used == [(3, 3), (2, 2), "here", "here", "here"]
    convert_module._run_pieces([], 4, print, Counting())  # nothing left to do: no pool either
    assert used == [(3, 3), (2, 2), "here", "here", "here"]


def test_a_pool_of_many_workers_keeps_two_pieces_each_in_flight(fake_pool):
    done = []
    convert_module._pool_pieces(pool_tasks(600), 200, done.append, Counting(), fake_pool.context, None)
    assert FakePool.made[0].most == 400 and len(done) == 600


def test_closing_the_tick_channel_waits_up_to_five_seconds_for_its_counter():
    joined = []
    channel = convert_module._TickChannel.__new__(convert_module._TickChannel)
    channel.queue = types.SimpleNamespace(_wlock=None, put=lambda item: joined.append(("put", item)))
    channel._reader = types.SimpleNamespace(join=lambda timeout: joined.append(("join", timeout)))
    channel.close()
    assert joined == [("put", None), ("join", 5)]


def test_a_failed_cleanup_does_not_hide_the_failure(tmp_path, monkeypatch):
    work = tmp_path / "w"
    work.mkdir()
    real = convert_module.shutil.rmtree

    def stubborn(path, ignore_errors=False):
        if not ignore_errors:
            raise OSError(errno.EBUSY, "Device or resource busy")
        real(path, ignore_errors=True)

    monkeypatch.setattr(convert_module.shutil, "rmtree", stubborn)
    convert_module._forget(work, False)
    assert not work.exists()


@pytest.mark.parametrize(("backend", "devices", "device"), [
    ("auto", [], "Dask workers (GPU where usable, else CPU)"), ("cupy", [], "Dask workers (GPU)"),
    ("auto", ["numpy on CPU", "cupy on GPU 0"], "Dask workers: numpy on CPU; cupy on GPU 0"),
])
def test_a_conversion_on_dask_says_what_the_workers_computed_on(raw, tmp_path, in_process, monkeypatch, backend,
                                                                devices, device):
    from phasefeat.io import distributed

    def on_dask(tasks, piece_paths, scheduler, backend_name, on_done, echo=print):
        for task in tasks:
            piece = convert_module.process_piece({**task, "enhance_here": True})
            write_piece(piece_paths[task["piece_id"]], piece)
            on_done(task["piece_id"], len(piece["failed_path"]))
        return devices

    monkeypatch.setattr(distributed, "run_pieces_on_dask", on_dask)
    summary = run(raw, tmp_path / "s.h5", backend=backend, scheduler="local:1")
    assert (summary.backend, summary.device) == (backend, device)
    with open_store(tmp_path / "s.h5") as store:
        assert store.attrs["engine"] == "dask local:1" and store.attrs["device"] == device


def test_memory_is_said_in_gib(monkeypatch):
    # figures just either side of a rounding step: 1.25 GiB less or more 0.01 %
    monkeypatch.setattr(convert_module, "conversion_memory", lambda options, workers: 1.2501 * 2**30)
    monkeypatch.setattr(convert_module, "available_memory", lambda: int(1.2499 * 2**30))
    with pytest.raises(ConvertError, match=r"^--size 299 needs about 1.3 GB of memory .*, 1.2 GB are available"):
        convert_module._check_memory(ConvertOptions(), 1)


def test_the_tick_channel_counts_every_tick_and_lets_the_process_end():
    import multiprocessing

    ticks = Counting()
    channel = convert_module._TickChannel(multiprocessing.get_context("spawn"), ticks)
    for piece_id in (0, 0, 2):
        channel.queue.put(piece_id)
    channel.close()
    assert ticks.ticks == {0: 2, 2: 1}
    assert not channel._reader.is_alive() and channel._reader.daemon


def test_the_first_file_of_a_piece_is_named_when_its_worker_keeps_dying(fake_pool):
    FakePool.deaths = 10
    tasks = [{"piece_id": 0, "entries": [(0, "first.png", 0, "", ""), (1, "second.png", 0, "", "")]}]
    with pytest.raises(ConvertError, match=r"converting piece 0 \(from first.png\)"):
        convert_module._pool_pieces(tasks, 1, print, Counting(), fake_pool.context, None)


def test_features_are_batched_64_by_default(raw, tmp_path, in_process, monkeypatch):
    seen = []
    monkeypatch.setattr(convert_module, "_run_pieces", lambda tasks, workers, on_result, progress: seen.extend(
        tasks) or [on_result(convert_module.process_piece(t)) for t in tasks])
    convert(raw, tmp_path / "s.h5", options=OPTIONS, backend="numpy", progress=False)
    assert {t["batch_size"] for t in seen} == {64}


def test_a_local_conversion_resolves_auto_here(raw, tmp_path, in_process):
    summary = run(raw, tmp_path / "s.h5", backend="auto")
    assert summary.backend in ("numpy", "cupy") and not summary.device.startswith("Dask")


def test_a_read_only_file_system_is_not_called_a_full_disk(raw, tmp_path, monkeypatch):
    def read_only(output, piece_paths, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(convert_module, "_assemble_apart", read_only)
    with pytest.raises(OSError, match="Read-only file system") as raised:
        run(raw, tmp_path / "s.h5")
    assert not isinstance(raised.value, DiskFullError)


def test_an_unfinished_conversion_of_other_settings_is_not_called_resumable(raw, tmp_path, in_process):
    out = tmp_path / "s.h5"
    run(raw, out, options=dataclasses.replace(OPTIONS, size=8))
    (tmp_path / "s.h5.parts").mkdir()
    (tmp_path / "s.h5.parts" / "manifest.json").write_text(json.dumps({"another": "conversion"}))
    with pytest.raises(ConvertError) as raised:
        run(raw, out)
    assert str(raised.value).endswith("holds an unfinished conversion: pass --overwrite to replace the store")


@pytest.mark.parametrize(("workers", "scheduler", "warmup"), [(1, None, 1), (2, None, 2), (8, None, 3),
                                                               (4, "local:1", 1)])
def test_the_rate_is_measured_after_one_image_per_worker(raw, tmp_path, in_process, monkeypatch, workers, scheduler,
                                                        warmup):
    from phasefeat.io import distributed

    bars = []
    real = convert_module.SteadyRateBar
    monkeypatch.setattr(convert_module, "SteadyRateBar", lambda *a, **k: bars.append(k) or real(*a, **k))
    monkeypatch.setattr(convert_module, "_run_pieces", lambda tasks, w, on_result, progress: [
        on_result(convert_module.process_piece(t)) for t in tasks])
    monkeypatch.setattr(distributed, "run_pieces_on_dask", lambda tasks, paths, *a, **k: [
        write_piece(paths[t["piece_id"]], convert_module.process_piece(t)) for t in tasks] and [])
    run(raw, tmp_path / "s.h5", workers=workers, scheduler=scheduler)
    assert bars[0]["warmup"] == warmup  # 3 pieces: never more workers than pieces
    assert (bars[0]["desc"], bars[0]["unit"], bars[0]["total"], bars[0]["dynamic_ncols"]) == ("convert", "img", 6, True)


def test_pieces_finished_out_of_order_before_a_worker_died_are_kept(fake_pool):
    FakePool.deaths, FakePool.finish_first, FakePool.also_ready = 1, 1, (2,)
    done, progress = [], Counting()
    convert_module._pool_pieces(pool_tasks(4), 2, done.append, progress, fake_pool.context, None)
    assert done[:2] == [0, 2] and sorted(done) == [0, 1, 2, 3]
    assert progress.restarts == [1, 3]  # piece 2 had finished: it is kept, not started again


def test_a_conversions_settings_are_keywords(raw, tmp_path):
    with pytest.raises(TypeError, match="positional"):
        convert(raw, tmp_path / "s.h5", PhaseParams())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]
