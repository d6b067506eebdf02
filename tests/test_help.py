"""``--help`` and option checks answer without loading a deep-learning framework."""

import subprocess
import sys

import pytest

FRAMEWORKS = ("tensorflow", "keras", "torch", "jax")

PROBE = """
import sys
from {module} import main
try:
    main({args!r})
except SystemExit as exc:
    code = exc.code
print("EXIT", code)
print("LOADED", sorted({{m.split('.')[0] for m in sys.modules}} & set({frameworks!r})))
"""


def _loaded(module, args):
    code = PROBE.format(module=module, args=args, frameworks=FRAMEWORKS)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines() if line.startswith(("EXIT", "LOADED")))
    return lines["EXIT"], lines["LOADED"], out.stdout + out.stderr


@pytest.mark.parametrize("args", [
    ["--help"], ["compare", "--help"], ["audit", "--help"], ["train", "--help"], ["evaluate", "--help"],
    ["explain", "--help"],
])
def test_trainer_help_loads_no_framework(args):
    code, loaded, output = _loaded("trainer.cli", args)
    assert code in ("0", "None") and "Usage:" in output
    assert loaded == "[]", loaded


@pytest.mark.parametrize(("args", "message"), [
    (["compare", "--store", "x.h5", "--head-activation", "bogus"], "'bogus' is not one of 'relu'"),
    (["compare", "--store", "x.h5", "--losses", "hinge"], "unknown 'hinge'"),
    (["train", "--store", "missing-store.h5"], "missing-store.h5: no such file"),
    (["audit", "--store", "missing-store.h5"], "missing-store.h5: no such file"),
    (["evaluate", "--model", "m.keras", "--store", "missing-store.h5"], "missing-store.h5: no such file"),
])
def test_trainer_refuses_before_loading_a_framework(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, loaded, output = _loaded("trainer.cli", args)
    assert code not in ("0", "None") and message in output
    assert loaded == "[]", loaded
    assert "Traceback" not in output


@pytest.mark.parametrize("args", [["--help"], ["convert", "--help"], ["enhance", "--help"]])
def test_phasefeat_help_loads_no_framework(args):
    code, loaded, output = _loaded("phasefeat.cli", args)
    assert code in ("0", "None") and "Usage:" in output and loaded == "[]"


def test_every_head_activation_resolves_in_keras():
    keras = pytest.importorskip("keras")
    from trainer.model import HEAD_ACTIVATIONS

    for name in HEAD_ACTIVATIONS:
        assert callable(keras.activations.get(name)), name


@pytest.mark.parametrize("tool", ["phasefeat", "trainer"])
def test_group_help_lists_every_command_with_a_whole_sentence(tool):
    """`phasefeat --help` and `trainer --help` cut command descriptions mid-sentence ("...and the...")."""
    from click.testing import CliRunner

    from phasefeat.cli import cli as phasefeat_cli
    from trainer.cli import cli as trainer_cli

    group = {"phasefeat": phasefeat_cli, "trainer": trainer_cli}[tool]
    text = CliRunner().invoke(group, ["--help"], terminal_width=80).output
    listed = text.split("Commands:\n", 1)[1].splitlines()
    assert sorted(line.split()[0] for line in listed if line.strip()) == sorted(group.commands)
    for line in listed:
        assert len(line) <= 80 and line.endswith((".", "?")) and not line.endswith("..."), line
