"""The `phasefeat` command line."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from phasefeat.cli import cli

REPO = Path(__file__).resolve().parents[1]


def run(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_help_lists_commands_and_every_option_is_explained():
    result = run("--help")
    assert result.exit_code == 0 and "enhance" in result.output
    result = run("enhance", "--help")
    assert result.exit_code == 0
    for option in ("--output", "--enh-png", "--preset", "--size", "--backend", "--dtype", "--seed"):
        assert option in result.output
    for param in cli.commands["enhance"].params:
        if param.param_type_name == "option":
            assert param.help, f"{param.name} has no help text"


def test_version():
    result = run("--version")
    assert result.exit_code == 0 and "phasefeat, version" in result.output


def test_python_dash_m_and_help_is_light():
    code = ("import sys, runpy; sys.argv=['phasefeat','--help']\n"
            "try:\n    runpy.run_module('phasefeat', run_name='__main__')\n"
            "except SystemExit: pass\n"
            "heavy=[m for m in ('matplotlib','numba','PIL','cupy','scipy','h5py') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "Commands:" in out.stdout and "HEAVY []" in out.stdout


def test_enhance_builtin_phantom(tmp_path):
    fig, enh = tmp_path / "fig.png", tmp_path / "sub" / "enh.png"
    result = run("enhance", "--output", str(fig), "--enh-png", str(enh), "--size", "96",
                 "--backend", "numpy")
    assert result.exit_code == 0, result.output
    with Image.open(fig) as im:
        assert im.format == "PNG" and im.size[0] > im.size[1] > 100
    with Image.open(enh) as im:
        assert im.mode == "RGB" and im.size == (96, 96)
        arr = np.asarray(im)
    assert arr[..., 0].max() == 255 and arr[..., 0].min() == 0
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_enhance_16bit_file_and_resize(tmp_path):
    from phasefeat.tools.phantom import chest_phantom

    src = tmp_path / "cxr16.png"
    Image.fromarray(chest_phantom((120, 90), seed=4, dtype="uint16")).save(src)
    result = run("enhance", str(src), "--output", str(tmp_path / "f.png"), "--size", "64",
                 "--enh-png", str(tmp_path / "e.png"), "--preset", "assd_lpe")
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "e.png") as im:
        assert im.size == (64, 64)


@pytest.mark.parametrize(("content", "message"), [
    (b"", "empty file"), (b"hello, not a png", "not an image"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, "truncated or corrupt PNG"),
])
def test_enhance_bad_file_gives_one_line_error(tmp_path, content, message):
    bad = tmp_path / "bad.png"
    bad.write_bytes(content)
    result = CliRunner().invoke(cli, ["enhance", str(bad), "-o", str(tmp_path / "x.png")])
    assert result.exit_code != 0
    assert "Error:" in result.output
    assert re.search(message, result.output)
    assert "Traceback" not in result.output
    assert not (tmp_path / "x.png").exists()


def test_enhance_missing_file(tmp_path):
    result = CliRunner().invoke(cli, ["enhance", str(tmp_path / "nope.png")])
    assert result.exit_code != 0 and "no such file" in result.output


def test_enhance_cupy_unavailable_is_a_clean_error(tmp_path, monkeypatch):
    from phasefeat import backend

    monkeypatch.setattr(backend, "_cupy_backend_or_reason", lambda: "CuPy is not installed (test)")
    result = CliRunner().invoke(cli, ["enhance", "--backend", "cupy", "-o", str(tmp_path / "x.png"),
                                      "--size", "32"])
    assert result.exit_code != 0 and "CuPy is not installed" in result.output
    assert "Traceback" not in result.output


def test_outputs_get_normal_permissions_and_failed_writes_leave_nothing(tmp_path):
    import os

    from phasefeat.tools.figures import atomic_save_png

    path = atomic_save_png(np.zeros((8, 8), dtype=np.uint8), tmp_path / "a.png")
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask
    with pytest.raises(TypeError):
        atomic_save_png(np.zeros((8, 8), dtype=object), tmp_path / "b.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_verbose_convert_prints_its_timings(tmp_path):
    from datasets import class_folder_dataset

    class_folder_dataset(tmp_path / "raw", per_class=1)
    done = subprocess.run([sys.executable, "-m", "phasefeat", "-v", "convert", str(tmp_path / "raw"),
                           str(tmp_path / "s.h5"), "--size", "32", "-q", "--backend", "numpy"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    for stage in ("discovery:", "pieces:", "assembly:"):
        assert stage in done.stderr


def test_transparent_pixels_are_noted_in_the_store(tmp_path):
    from phasefeat.io.store import open_store
    from phasefeat.tools.phantom import chest_phantom

    (tmp_path / "raw" / "normal").mkdir(parents=True)
    grey = chest_phantom(64, seed=1)
    alpha = np.full(grey.shape, 255, np.uint8)
    alpha[:16] = 0  # a quarter of the image transparent
    Image.fromarray(np.dstack([grey, grey, grey, alpha])).save(tmp_path / "raw" / "normal" / "a.png")
    Image.fromarray(np.dstack([grey, grey, grey, np.full(grey.shape, 255, np.uint8)])).save(
        tmp_path / "raw" / "normal" / "b.png")
    result = CliRunner().invoke(cli, ["convert", str(tmp_path / "raw"), str(tmp_path / "s.h5"), "--size", "32",
                                      "-q", "--backend", "numpy"])
    assert result.exit_code == 0, result.output
    with open_store(tmp_path / "s.h5") as store:
        modes = [m.decode() for m in store.meta("orig_mode")]
    assert modes == ["RGBA (alpha dropped: 25.0 % of pixels not opaque)", "RGBA"]
    text = CliRunner().invoke(cli, ["inspect", str(tmp_path / "s.h5")]).output
    assert "1 image(s) had transparent pixels" in text


def test_plain_make_lists_the_targets():
    import shutil

    if shutil.which("make") is None:
        pytest.skip("needs make")
    done = subprocess.run(["make", "--no-print-directory"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0
    for target in ("demo:", "test:", "lint:", "bench:", "help:"):
        assert target in done.stdout
