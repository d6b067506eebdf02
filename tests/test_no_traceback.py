"""Every command, fed each kind of bad input, ends in one line and a non-zero exit, never a traceback."""

import click
import pytest
from click.testing import CliRunner

from phasefeat.cli import cli as phasefeat_cli
from trainer.cli import cli as trainer_cli

BAD = ("missing", "junk", "folder", "empty")


def bad_path(tmp_path, kind):
    path = tmp_path / f"bad-{kind}"
    if kind == "junk":
        path.write_bytes(b"\x00\x01 not what it should be \xff" * 40)
    elif kind == "folder":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    return path


COMMANDS = [
    (phasefeat_cli, lambda p, t: ["enhance", p, "-o", t / "o.png"]),
    (phasefeat_cli, lambda p, t: ["convert", p, t / "s.h5"]),
    (phasefeat_cli, lambda p, t: ["inspect", p]),
    (phasefeat_cli, lambda p, t: ["inspect", p, "--verify"]),
    (phasefeat_cli, lambda p, t: ["preview", p, "-o", t / "o.png"]),
    (phasefeat_cli, lambda p, t: ["convert", t, t / "s.h5", "--labels", p]),
    (phasefeat_cli, lambda p, t: ["convert", t, t / "s.h5", "--params", p]),
    (trainer_cli, lambda p, t: ["compare", "--store", p, "--out", t / "g"]),
    (trainer_cli, lambda p, t: ["train", "--store", p, "--out", t / "r"]),
    (trainer_cli, lambda p, t: ["audit", "--store", p, "--out", t / "a"]),
    (trainer_cli, lambda p, t: ["evaluate", "--model", p, "--store", p]),
]


def assert_one_line_error(result):
    """A non-zero exit with one ``Error: ...`` line, and no exception escaping click."""
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    error = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(error) == 1, result.output


@pytest.mark.parametrize("kind", BAD)
@pytest.mark.parametrize("k", range(len(COMMANDS)))
def test_bad_input_is_one_line_and_leaves_nothing(tmp_path, k, kind):
    command, args = COMMANDS[k]
    path = bad_path(tmp_path, kind)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = CliRunner().invoke(command, [str(a) for a in args(path, tmp_path)])
    assert_one_line_error(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing left behind


@pytest.mark.parametrize("group", [phasefeat_cli, trainer_cli], ids=["phasefeat", "trainer"])
def test_every_option_has_help_text(group):
    missing = [f"{name} {param.name}" for name, command in group.commands.items()
               for param in command.params if isinstance(param, click.Option) and not param.help]
    assert not missing


LONG = "x" * 300  # longer than any file system's name limit (255 bytes on ext4, XFS, btrfs, tmpfs)

OUTPUTS = [
    (phasefeat_cli, lambda s, o: ["enhance", "-o", o / f"{LONG}.png"]),
    (phasefeat_cli, lambda s, o: ["preview", s, "-o", o / f"{LONG}.png"]),
    (phasefeat_cli, lambda s, o: ["demo-data", o / LONG, "--per-class", "1"]),
    (phasefeat_cli, lambda s, o: ["convert", s.parent, o / f"{LONG}.h5"]),
    (phasefeat_cli, lambda s, o: ["inspect", o / f"{LONG}.h5"]),
    (trainer_cli, lambda s, o: ["compare", "--store", s, "--out", o / LONG]),
    (trainer_cli, lambda s, o: ["train", "--store", s, "--out", o / LONG]),
    (trainer_cli, lambda s, o: ["evaluate", "--model", o / f"{LONG}.keras", "--store", s]),
]


@pytest.mark.parametrize("k", range(len(OUTPUTS)))
def test_a_name_too_long_is_one_line_and_creates_no_parent(store, tmp_path, k):
    """The operating system's refusal is one line, and no folder made on the way is left behind."""
    command, args = OUTPUTS[k]
    parent = tmp_path / "new" / "deeper"  # does not exist: a command that makes it must undo that
    result = CliRunner().invoke(command, [str(a) for a in args(store, parent)])
    assert_one_line_error(result)
    assert list(tmp_path.iterdir()) == []


def _damage(path, how):
    import h5py
    import numpy as np

    with h5py.File(path, "r+") as f:
        if how.startswith("without "):
            del f[how.split(" ", 1)[1]]
        elif how == "params_json a list":
            f.attrs["params_json"] = "[1, 2]"
        elif how == "format_version an array":
            f.attrs["format_version"] = np.array([1, 2])
        elif how == "class names not UTF-8":
            names = [n.encode() for n in f["class_names"].asstr()[()]]
            names[0] = b"\xff\xfe-bad"
            del f["class_names"]
            f.create_dataset("class_names", data=np.array(names, dtype=object), dtype=h5py.string_dtype("ascii"))


DAMAGE = ["without meta/patient_id", "without meta/sha256", "without meta/orig_mode", "without meta/source",
          "params_json a list", "format_version an array", "class names not UTF-8"]
STORE_COMMANDS = [
    (phasefeat_cli, lambda s, t: ["inspect", s]),
    (phasefeat_cli, lambda s, t: ["preview", s, "-o", t / "p.png"]),
    (trainer_cli, lambda s, t: ["train", "--store", s, "--out", t / "r", "--epochs", "1", "--width", "0.0625"]),
    (trainer_cli, lambda s, t: ["compare", "--store", s, "--out", t / "g", "--epochs", "1", "--width", "0.0625",
                                "--inputs", "cxr", "--losses", "cce", "--repeats", "1"]),
    (trainer_cli, lambda s, t: ["audit", "--store", s, "--out", t / "a", "--epochs", "1", "--width", "0.0625",
                                "--inputs", "cxr", "--repeats", "1", "--occlude-fractions", "0.9"]),
]


@pytest.mark.parametrize("how", DAMAGE)
@pytest.mark.parametrize("k", range(len(STORE_COMMANDS)))
def test_a_damaged_store_is_read_or_refused_in_one_line(store, tmp_path, how, k):
    """A store lacking an optional /meta column is read (docs/store-format.md: the minimal store);
    any other damage is refused in one line."""
    import shutil

    copy = tmp_path / "s.h5"
    shutil.copy(store, copy)
    _damage(copy, how)
    command, args = STORE_COMMANDS[k]
    result = CliRunner().invoke(command, [str(a) for a in args(copy, tmp_path)])
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    if how.startswith("without "):
        assert result.exit_code == 0, result.output
    else:
        assert_one_line_error(result)


MISUSE = [
    (phasefeat_cli, lambda s, t: ["preview", s, "-o", s], "write the figure as .png"),  # onto the store
    (phasefeat_cli, lambda s, t: ["preview", s, "-o", t / "fig.xyz"], "write the figure as .png"),
    (phasefeat_cli, lambda s, t: ["enhance", "-o", t / "fig.bmp"], "write the figure as .png"),
    (phasefeat_cli, lambda s, t: ["enhance", "--enh-png", t / "enh.jpg"], "written as PNG"),
    (phasefeat_cli, lambda s, t: ["demo-data", t / "d", "--seed", "-1"], "-1 is not in the range"),
    (trainer_cli, lambda s, t: ["evaluate", "--model", t / "m.keras", "--store", s, "--split-seed", "-1"],
     "-1 is not in the range"),
    (trainer_cli, lambda s, t: ["compare", "--store", s, "--seed", "-1", "--out", t / "g"], "-1 is not in the range"),
    (trainer_cli, lambda s, t: ["train", "--store", s, "--split-seed", "-5", "--out", t / "r"],
     "-5 is not in the range"),
]


@pytest.mark.parametrize("k", range(len(MISUSE)))
def test_misused_options_are_refused_before_any_work(store, tmp_path, k):
    import shutil

    command, args, message = MISUSE[k]
    copy = tmp_path / "s.h5"
    shutil.copy(store, copy)
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    result = CliRunner().invoke(command, [str(a) for a in args(copy, tmp_path)])
    assert_one_line_error(result)
    assert result.exit_code == 2 and message in result.output, result.output
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before
