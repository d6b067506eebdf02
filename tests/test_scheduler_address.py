"""A scheduler address or file that is not Dask's ends both tools in one line within seconds (it hung
past 420 s, or raised from inside Dask), and the files the tools read back from their own folders are
checked for shape."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time

import pytest
from click.testing import CliRunner
from datasets import class_folder_dataset, tiny_store
from test_no_traceback import assert_one_line_error

from phasefeat.cli import cli as phasefeat_cli
from phasefeat.io.distributed import GREETING_SECONDS
from trainer.cli import cli as trainer_cli

pytest.importorskip("distributed")


@contextlib.contextmanager
def server(greeting: bytes | None):
    """A TCP port on this machine that accepts connections and sends ``greeting`` (None: nothing, ever)."""
    listener = socket.create_server(("127.0.0.1", 0))
    held = []

    def serve():
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                held.append(conn)
                if greeting is not None:
                    conn.sendall(greeting)

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"tcp://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()
        for conn in held:
            conn.close()


def commands(tmp_path):
    raw = tmp_path / "raw"
    class_folder_dataset(raw, per_class=2)
    store = tiny_store(tmp_path / "s.h5", n=9)
    return {"convert": (phasefeat_cli, ["convert", str(raw), str(tmp_path / "x.h5"), "--size", "32"]),
            "compare": (trainer_cli, ["compare", "--store", str(store), "--out", str(tmp_path / "g")])}


@pytest.mark.parametrize("tool", ["convert", "compare"])
@pytest.mark.parametrize(("greeting", "said"), [
    (None, f"it accepts connections but sent nothing in {GREETING_SECONDS} s, so it is not a Dask scheduler"),
    # what an HTTP server answers; read as Dask's frame length it asked for 3.07 EiB
    (b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", "it answers, but not as a Dask scheduler does"),
])
def test_an_address_that_does_not_speak_dask_is_one_line_within_seconds(tmp_path, tool, greeting, said):
    cli, args = commands(tmp_path)[tool]
    with server(greeting) as address:
        started = time.monotonic()
        result = CliRunner().invoke(cli, [*args, "--scheduler", address])
        seconds = time.monotonic() - started
    assert_one_line_error(result)
    assert said in result.output, result.output
    assert seconds < GREETING_SECONDS + 15
    assert not (tmp_path / "x.h5").exists() and not (tmp_path / "g").exists()


@pytest.mark.parametrize("tool", ["convert", "compare"])
@pytest.mark.parametrize(("content", "said"), [
    ("{not json", "not JSON"), ("{}", "no scheduler address in it"), ("[1, 2]", "no scheduler address in it"),
    ('{"address": 7}', "no scheduler address in it"),
])
def test_a_scheduler_file_is_read_and_checked_before_connecting(tmp_path, tool, content, said):
    cli, args = commands(tmp_path)[tool]
    path = tmp_path / "scheduler.json"
    path.write_text(content)
    started = time.monotonic()
    result = CliRunner().invoke(cli, [*args, "--scheduler", str(path)])
    assert_one_line_error(result)
    assert f"{path}: {said}" in result.output and "dask scheduler --scheduler-file" in result.output
    assert time.monotonic() - started < 5  # was an AssertionError from inside Dask after ~11 s


def test_a_closed_port_is_one_line(tmp_path):
    cli, args = commands(tmp_path)["compare"]
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
    result = CliRunner().invoke(cli, [*args, "--scheduler", f"tcp://127.0.0.1:{port}"])
    assert_one_line_error(result)
    assert "cannot reach the Dask scheduler" in result.output


def test_threads_per_run_out_of_range_is_refused_before_any_work(tmp_path):
    cli, args = commands(tmp_path)["compare"]
    for value in ("99999999999999999999", "4097", "0"):
        result = CliRunner().invoke(cli, [*args, "--scheduler", "local:1", "--threads-per-run", value])
        assert result.exit_code == 2 and "--threads-per-run" in result.output and "1<=x<=4096" in result.output
    assert not (tmp_path / "g").exists()


@pytest.mark.parametrize("content", ["[]", "[1, 2]", '"text"', "7"])
def test_grid_and_result_files_of_another_shape_are_named(tmp_path, content):
    """Valid JSON of the wrong shape in a grid's own files raised AttributeError."""
    from trainer.experiment import GridError, RunConfig
    from trainer.grid import Job, finished_run, planned_identity, read_record

    path = tmp_path / "grid.json"
    path.write_text(content)
    with pytest.raises(GridError, match=r"grid.json is damaged \(JSON, but not a grid's settings\); delete it"):
        read_record(path, "a grid's settings", "delete it or use another --out")
    run = tmp_path / "runs" / "enh-cce-r0"
    run.mkdir(parents=True)
    (run / "result.json").write_text(content)
    with pytest.raises(GridError, match=r"result.json is damaged \(JSON, but not a run's result\); delete .*"
                                        r"enh-cce-r0 to run it again"):
        finished_run(Job(RunConfig(), run, None), planned_identity({}, None, "tensorflow"))
    store = tiny_store(tmp_path / "s.h5", n=9)
    result = CliRunner().invoke(trainer_cli, ["train", "--store", str(store), "--out", str(run)])
    assert_one_line_error(result)
    assert "result.json is damaged (not a run's result)" in result.output
    result = CliRunner().invoke(trainer_cli, ["compare", "--store", str(store), "--out", str(tmp_path)])
    assert_one_line_error(result)
    assert "grid.json is damaged (JSON, but not a grid's settings); delete it or use another --out" in result.output


def test_a_damaged_schedule_is_set_aside_with_one_line(tmp_path):
    """OUT/schedule.json holding [] crashed the driver when the first run finished (and on every rerun)."""
    from trainer.cluster import _read_schedule

    path = tmp_path / "schedule.json"
    said = []
    for content in ("[]", "{oops", '{"run": 3}'):
        path.write_text(content)
        assert _read_schedule(path, said.append) == {}
        assert not path.exists() and (tmp_path / "schedule.json.damaged").read_text() == content
    assert said == [f"{path} was damaged (not a schedule); set aside as schedule.json.damaged, a new one begins"] * 3
    path.write_text(json.dumps({"enh-cce-r0": {"status": "done"}}))
    assert _read_schedule(path, said.append) == {"enh-cce-r0": {"status": "done"}} and len(said) == 3
