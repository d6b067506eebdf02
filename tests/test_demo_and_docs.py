"""The demo data, the demo pipeline at its smallest, and docs that cannot drift from the code."""

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from phasefeat.cli import cli
from phasefeat.io.store import open_store
from phasefeat.tools.demo_data import write_demo_data
from phasefeat.tools.phantom import chest_phantom

REPO = Path(__file__).resolve().parents[1]


def test_phantom_is_deterministic_and_findings_change_it():
    a = chest_phantom((80, 70), seed=5, finding="covid", dtype="float64")
    assert np.array_equal(a, chest_phantom((80, 70), seed=5, finding="covid", dtype="float64"))
    assert not np.array_equal(a, chest_phantom((80, 70), seed=6, finding="covid", dtype="float64"))
    normal = chest_phantom(96, seed=1, dtype="float64", finding="normal")
    pneu = chest_phantom(96, seed=1, dtype="float64", finding="pneumonia")
    assert np.abs(pneu - normal).max() > 0.1
    level = chest_phantom(96, seed=2, dtype="float64", finding="pneumonia", mean_level=0.42)
    assert level.mean() == pytest.approx(0.42, abs=0.01)
    with pytest.raises(ValueError, match="finding"):
        chest_phantom(32, finding="tuberculosis")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "raw"
    write_demo_data(out, per_class=30, seed=3, min_size=64, max_size=128)
    return out


def _softmax_regression_cv_accuracy(features, labels, folds=5, seed=0):
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    correct = 0
    for k in range(folds):
        test = order[k::folds]
        train = np.setdiff1d(order, test)
        mu, sd = features[train].mean(0), features[train].std(0) + 1e-9
        x = np.c_[(features - mu) / sd, np.ones(len(labels))]
        w = np.zeros((x.shape[1], 3))
        onehot = np.eye(3)[labels]
        for _ in range(500):  # plain gradient descent on the multinomial log-loss
            z = x[train] @ w
            p = np.exp(z - z.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            w -= 0.5 * x[train].T @ (p - onehot[train]) / len(train)
        correct += (np.argmax(x[test] @ w, 1) == labels[test]).sum()
    return correct / len(labels)


def test_demo_classes_are_not_separable_by_trivial_statistics(demo):
    features, labels = [], []
    for c, name in enumerate(("normal", "pneumonia", "covid")):
        for path in sorted((demo / name).iterdir()):
            with Image.open(path) as im:
                pixels = np.asarray(im, dtype=np.float64) / (65535 if im.mode.startswith("I") else 255)
                features.append([im.width, im.height, pixels.mean(), path.suffix == ".jpg",
                                 im.mode.startswith("I")])
            labels.append(c)
    accuracy = _softmax_regression_cv_accuracy(np.array(features, dtype=np.float64), np.array(labels))
    assert accuracy < 0.5, f"size/mean/format predict the class ({accuracy:.2f}; chance is 0.33)"


def test_demo_files_say_they_are_synthetic_and_rerun_reuses(demo):
    assert "SYNTHETIC" in (demo / "README.txt").read_text()
    formats = set()
    for path in sorted(demo.rglob("synthetic_*")):
        with Image.open(path) as im:
            text = im.info.get("Description", "") or im.info.get("comment", b"").decode()
            formats.add((path.suffix, im.mode))
        assert "SYNTHETIC" in text, path
    assert formats >= {(".png", "L"), (".jpg", "L")} and any(m.startswith("I") for _, m in formats)
    assert write_demo_data(demo, per_class=30, seed=3, min_size=64, max_size=128)["reused"]


def test_demo_pipeline_at_its_smallest(tmp_path):
    """phantoms -> convert -> preview -> compare (1 epoch) -> a report with filled tables."""
    from trainer.cli import cli as trainer_cli

    raw, store, results = tmp_path / "raw", tmp_path / "enh.h5", tmp_path / "results"
    run = CliRunner().invoke
    assert run(cli, ["demo-data", str(raw), "--per-class", "8", "--min-size", "64", "--max-size", "96"]).exit_code == 0
    assert run(cli, ["convert", str(raw), str(store), "--size", "32", "-q", "--backend", "numpy"]).exit_code == 0
    assert run(cli, ["preview", str(store), "-o", str(tmp_path / "preview.png")]).exit_code == 0
    result = run(trainer_cli, ["compare", "--store", str(store), "--width", "0.125", "--epochs", "1",
                               "--repeats", "1", "--out", str(results)])
    assert result.exit_code == 0, result.output
    report = (results / "report.md").read_text()
    for arm in ("CXR + CCE", "CXR + SCCE", "ENH + CCE", "ENH + SCCE"):
        assert f"## {arm}" in report
    rows = [line for line in report.splitlines() if re.match(r"\| (cxr|enh)-(cce|scce)-r0 \| 0 \| \d", line)]
    assert len(rows) == 4
    assert re.search(r"\n  (Lowest mean test loss|The arms did not learn)", result.output)
    assert (tmp_path / "preview.png").exists()


@pytest.mark.slow
@pytest.mark.real_data
def test_make_demo_on_own_data_twice(tmp_path):
    """``make demo DATA=...`` (the README's first command on your own radiographs), run twice:
    the second run reuses the store and every finished run."""
    from conftest import REAL_DIR

    bin_dir = Path(sys.executable).parent
    if shutil.which("make") is None or not (bin_dir / "phasefeat").exists():
        pytest.skip("needs make and the console scripts next to this interpreter")
    data = REAL_DIR
    if not data.is_dir():  # generated class folders stand in for the real radiographs
        data = tmp_path / "raw"
        write_demo_data(data, per_class=6, seed=3, min_size=64, max_size=96)
    venv = tmp_path / "venv"  # stamps only: the recipe uses the interpreter running these tests
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    for stamp in (".installed", ".installed-train"):
        (venv / stamp).touch()
    out = tmp_path / "out"
    command = ["make", "--no-print-directory", "demo", f"VENV={venv}", f"BIN={bin_dir}", f"DATA={data}",
               f"OUT={out}", "DEMO_SIZE=32", "DEMO_CONVERT=--features-at 32",
               "DEMO_TRAIN=--width 0.0625 --epochs 1 --repeats 1 --batch-size 16",
               "DEMO_AUDIT=--audit --occlude-fractions 0.9"]  # the audit at one occlusion size, not two
    if data == REAL_DIR:  # the real files' names carry their archive: nih_..., ieee_..., mhh_...
        command.append("DEMO_SOURCES=^[^/]+/([a-z]+)_")
    first = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    (demo,) = out.glob(f"demo-{data.name}-*")
    report = demo / "results" / "report.md"
    assert report.exists() and (demo / "preview.png").exists()
    from phasefeat.tools.store_card import SECTIONS, card_summary

    assert card_summary(demo / "card.html")["sections"] == list(SECTIONS)  # the store card, linked at the end
    assert f"{demo}/card.html" in first.stdout
    # one epoch of a 1/16-width model: the headline ranks the arms only if they learned
    headline = re.search(r"\n  (Lowest mean test loss|The arms did not learn)[^\n]*", first.stdout).group(0)
    with open_store(demo / "enh.h5") as store:
        assert any(store.sources) == (data == REAL_DIR)
    before = report.stat().st_mtime_ns, (demo / "enh.h5").stat().st_mtime_ns
    second = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "reusing" in second.stdout
    assert (demo / "enh.h5").stat().st_mtime_ns == before[1]
    assert headline in second.stdout


def _demo_plan(*variables):
    """The shell lines ``make -n demo`` would run with ``variables``."""
    if shutil.which("make") is None:
        pytest.skip("make not installed")
    # Without the variables of a make that runs these tests (`make test OUT=...` passes them down).
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "OUT", "DATA")}
    done = subprocess.run(["make", "-n", "--no-print-directory", "demo", *variables], cwd=REPO,
                          capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_make_demo_keeps_each_input_in_its_own_folder(tmp_path):
    """A DATA demo never reuses the phantoms' store (or another DATA's): its folder depends on the input."""
    folders = {}
    for name, data in (("phantoms", None), ("a", tmp_path / "one" / "raw"), ("b", tmp_path / "two" / "raw")):
        plan = _demo_plan(*([f"DATA={data}"] if data else []))
        folders[name] = re.search(r'mkdir -p "([^"]+)"', plan).group(1)
    assert folders["phantoms"] == "out/demo"
    assert folders["a"].startswith("out/demo-raw-") and folders["b"].startswith("out/demo-raw-")
    assert len(set(folders.values())) == 3
    own = _demo_plan(f"DATA={tmp_path}")
    assert "no sources recorded" in own and "cannot probe or hold out a source" in own
    with_sources = _demo_plan(f"DATA={tmp_path}", "DEMO_SOURCES=^[^/]+/([a-z]+)_")
    assert "--source-pattern '^[^/]+/([a-z]+)_'" in with_sources
    with_ids = _demo_plan(f"DATA={tmp_path}", "DEMO_PATIENTS=(person[0-9]+)_", "DEMO_LABELS=train.csv")
    assert "--patient-pattern '(person[0-9]+)_' --labels 'train.csv'" in with_ids
    assert "files in" in with_ids and "the first image and the first epoch include start-up" in with_ids
    assert "180 phantoms; it took 8.8 min after the install on a quiet 2-core VM" in _demo_plan()
    setup = json.loads((REPO / "benchmarks" / "results" / "setup-cpu.json").read_text())
    assert f"{setup['steps']['demo']['seconds'] / 60:.1f} min" == "8.8 min"  # the record behind the line


def test_the_readme_s_make_test_time_is_its_record():
    record = json.loads((REPO / "benchmarks" / "results" / "setup-test-cpu.json").read_text())
    minutes = record["steps"]["test"]["seconds"] / 60
    row = next(line for line in (REPO / "README.md").read_text().splitlines() if line.startswith("| `make test`"))
    assert f"| {minutes:.1f} min |" in row and record["steps"]["test"]["exit_status"] == 0
    assert record["baseline"]["steps"]["test"]["seconds"] > record["steps"]["test"]["seconds"]


def _clidoc():
    import importlib.util

    spec = importlib.util.spec_from_file_location("clidoc", REPO / "docs" / "clidoc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_is_generated_from_the_code():
    assert (REPO / "docs" / "cli.md").read_text() == _clidoc().render(), \
        "docs/cli.md is stale: run  python docs/clidoc.py > docs/cli.md"


def _parse(command_line):
    groups = _clidoc().groups

    words = shlex.split(command_line)
    group = groups()[words[0]]
    ctx = group.make_context(words[0], words[1:], resilient_parsing=False)
    sub = group.commands[words[1]]
    sub.make_context(words[1], words[2:], parent=ctx)  # raises on an unknown option or bad value


def test_every_cli_example_parses():
    EXAMPLES = _clidoc().EXAMPLES

    text = (REPO / "docs" / "cli.md").read_text()
    for examples in EXAMPLES.values():
        for example in examples:
            assert example in text
            _parse(example)


def test_readme_commands_exist():
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, flags=re.S)
    commands = [line.split("#")[0].strip() for block in blocks for line in block.splitlines()]
    commands = [c for c in commands if c]
    assert "make demo" in commands and "make test" in commands
    for command in commands:
        if command.startswith(("phasefeat ", "trainer ")):
            _parse(command)
        elif command.startswith("make "):
            if shutil.which("make") is None:
                pytest.skip("make not installed")
            dry = subprocess.run(["make", "-n", *command.split()[1:]], cwd=REPO, capture_output=True, text=True)
            assert dry.returncode == 0, dry.stderr


def test_benchmark_commands_in_docs_parse(monkeypatch, tmp_path):
    """Every ``python benchmarks/X.py ...`` line in the docs is accepted by that script's parser."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    # The docs' `--venv .venv` names the checkout's environment, which a checkout made for a side-by-side
    # benchmark (bench_setup.py --baseline) does not hold: the lines are read from a folder that has one.
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").symlink_to(sys.executable)
    monkeypatch.chdir(tmp_path)
    texts = [p.read_text() for p in (REPO / "docs").glob("*.md")]
    texts += [(REPO / name).read_text() for name in ("README.md", "CONTRIBUTING.md")]
    found = []
    for text in texts:
        for script, args in re.findall(r"python benchmarks/(\w+)\.py([^\n#`]*)", text):
            found.append(script)
            spec = importlib.util.spec_from_file_location(script, REPO / "benchmarks" / f"{script}.py")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            module.parse_args(shlex.split(args))  # SystemExit on an unknown option
    assert {"bench_features", "bench_convert", "bench_stream", "estimate_gpu"} <= set(found)


def test_demo_data_never_mixes_with_other_files(tmp_path):
    """A folder of real radiographs is refused untouched; phantoms of other settings are replaced, not mixed."""
    real = tmp_path / "mine"
    (real / "covid").mkdir(parents=True)
    (real / "covid" / "patient-7.png").write_bytes(b"a user's radiograph")
    refused = CliRunner().invoke(cli, ["demo-data", str(real), "--per-class", "2", "--min-size", "64",
                                       "--max-size", "70"])
    assert refused.exit_code == 1 and "holds files demo-data did not write (covid/patient-7.png)" in refused.output
    assert sorted(p.relative_to(real).as_posix() for p in real.rglob("*")) == ["covid", "covid/patient-7.png"]
    demo = tmp_path / "demo"
    write_demo_data(demo, per_class=3, seed=0, min_size=64, max_size=70)
    first = sorted(p.name for p in demo.rglob("*.*") if p.parent != demo)
    write_demo_data(demo, per_class=2, seed=1, min_size=64, max_size=70, shortcut=True)
    files = sorted(p.relative_to(demo).as_posix() for p in demo.rglob("*") if p.is_file())
    assert len([f for f in files if "/" in f]) == 6 and not set(first) & {f.split("/")[-1] for f in files}
    assert all(f.split("/")[-1].startswith("site") for f in files if "/" in f)
    (demo / "covid" / "notes.txt").write_text("mine now")
    with pytest.raises(ValueError, match="notes.txt"):
        write_demo_data(demo, per_class=2, seed=2, min_size=64, max_size=70)


@pytest.mark.parametrize("failing", ["main", "test_torch.py", "both", "none"])
def test_make_test_runs_both_pytest_steps_and_fails_if_either_failed(tmp_path, failing):
    """`make test` stopped at the first pytest step's failure, so test_torch.py never ran."""
    if shutil.which("make") is None:
        pytest.skip("make not installed")
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    for stamp in (".installed", ".installed-train", ".installed-test"):
        (venv / stamp).touch()
    calls = tmp_path / "calls.txt"
    fails = {"main": "--ignore=*", "test_torch.py": "\\ tests/test_torch.py", "both": "test_torch.py",
             "none": "no-such-argument"}[failing]
    # python and ruff stand-ins: record each call; "python -m pytest ..." fails where told to
    (venv / "bin" / "python").write_text(f'#!/bin/sh\necho "$*" >> {calls}\ncase "$*" in *{fails}*) exit 1;; esac\n')
    (venv / "bin" / "ruff").write_text("#!/bin/sh\nexit 0\n")
    for tool in ("python", "ruff"):
        (venv / "bin" / tool).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    done = subprocess.run(["make", "--no-print-directory", "test", f"VENV={venv}"], cwd=REPO, capture_output=True,
                          text=True, env=env)
    steps = calls.read_text().splitlines()
    assert len(steps) == 2 and "--ignore=tests/test_torch.py" in steps[0] and steps[1].endswith("tests/test_torch.py")
    assert "--dist loadgroup" in steps[0] and "-n " in steps[0]  # the main suite in one process per core
    assert (done.returncode == 0) == (failing == "none"), done.stderr
    if failing != "none":
        named = {"main": "main", "test_torch.py": "test_torch.py", "both": "main test_torch.py"}[failing]
        assert f"make test: failed: {named}" in done.stderr


def test_every_demo_knob_of_the_makefile_is_in_the_readme():
    """DEMO_TRAIN and DEMO_AUDIT were only in the Makefile."""
    knobs = re.findall(r"^(DEMO_[A-Z_]+) \?=", (REPO / "Makefile").read_text(), flags=re.M)
    readme = (REPO / "README.md").read_text()
    table = readme.split("### The demo on your own radiographs", 1)[1].split("\n## ", 1)[0]
    assert {"DEMO_SOURCES", "DEMO_PATIENTS", "DEMO_LABELS", "DEMO_TRAIN", "DEMO_AUDIT"} <= set(knobs)
    assert [k for k in knobs if k not in ("DEMO_DIR", "DEMO_PER_CLASS") and f"| `{k}` |" not in table] == []


@pytest.mark.parametrize(("failing", "status"), [("baseline", 0), ("this tree", 1)])
def test_bench_setup_times_a_failing_baseline_but_never_a_failing_tree(monkeypatch, tmp_path, failing, status):
    """An older revision may fail a test on a newer machine: its time is recorded with its exit status.
    This tree failing ends the run with no record."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location("bench_setup", REPO / "benchmarks" / "bench_setup.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    ran, written = [], {}

    def run_steps(label, steps, *args):
        ran.append(label)
        return {step: {"command": f"make {step}", "exit_status": int(label == failing), "seconds": 60.0 * len(ran),
                       "peak_tree_rss_gb": 1.0} for step in steps}

    monkeypatch.setattr(bench, "run_steps", run_steps)
    monkeypatch.setattr(bench, "checkout", lambda rev, into: tmp_path)
    monkeypatch.setattr(bench, "link_venv", lambda tree, venv: None)
    monkeypatch.setattr(bench, "write_record", lambda path, name, cpu, **fields: written.update(fields))
    git = subprocess.CompletedProcess([], 0, stdout="0" * 40 + "\n", stderr="")  # a checkout may have no .git
    monkeypatch.setattr(bench, "subprocess", SimpleNamespace(run=lambda command, **kwargs: git))
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    (tmp_path / "venv" / "bin" / "python").touch()
    code = bench.main(["--steps", "test", "--venv", str(tmp_path / "venv"), "--baseline", "HEAD", "--cpu", "x",
                       "--out", str(tmp_path / "record.json")])
    assert code == status and ran == ["baseline", "this tree"]
    if status == 0:
        assert written["baseline"]["steps"]["test"]["exit_status"] == 1
        assert written["steps"]["test"]["exit_status"] == 0
    else:
        assert written == {}
