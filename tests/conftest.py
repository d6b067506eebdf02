"""Shared fixtures: backends (GPU cases skipped cleanly), real and generated radiographs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from phasefeat.backend import gpu_available

REPO = Path(__file__).resolve().parents[1]
# The shared real radiographs live beside the checkout; never copied into the project.
# PHASEFEAT_CXR_REAL points the tests at another folder of class folders (normal/, covid/, ...).
REAL_DIR = Path(os.environ.get("PHASEFEAT_CXR_REAL", REPO.parent / "shared" / "data" / "cxr-real"))


def is_shared_set() -> bool:
    """Whether REAL_DIR is the project's shared set (documented numbers are for that set only)."""
    return (REAL_DIR / "MANIFEST.csv").is_file() and len(real_image_paths()) == 120


def real_class_counts() -> dict[str, int]:
    """Images per class folder of REAL_DIR."""
    counts: dict[str, int] = {}
    for p in real_image_paths():
        counts[p.relative_to(REAL_DIR).parts[0]] = counts.get(p.relative_to(REAL_DIR).parts[0], 0) + 1
    return counts
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}

_GPU_SKIPS: set[str] = set()
_STANDIN_RUNS: set[str] = set()


#: Fixtures whose data switch between the shared radiographs and generated phantoms.
REAL_OR_PHANTOM_FIXTURES = {"store", "radiograph", "real_images"}


#: Session fixtures that tests change and put back (a run's result deleted and redone): every test that
#: uses one runs in the same pytest-xdist worker, one after another, as in a run without workers.
CHANGED_AND_RESTORED_FIXTURES = ("grid",)


def pytest_itemcollected(item):
    """Mark ``real_data`` every test that sees other data where the shared radiographs are absent
    (as each is collected: before ``-m`` selects on the mark), and give it its pytest-xdist group."""
    if REAL_OR_PHANTOM_FIXTURES & set(getattr(item, "fixturenames", ())):
        item.add_marker(pytest.mark.real_data)
    group = xdist_group(item)
    if group:
        item.add_marker(pytest.mark.xdist_group(group))


def xdist_group(item) -> str | None:
    """The pytest-xdist worker group of a test (``make test`` runs ``--dist loadgroup``): the name of the
    changed and restored fixture it uses; else its module where it uses a module-scoped fixture (built
    once, in one worker); else none (any worker)."""
    names = set(getattr(item, "fixturenames", ()))
    for name in CHANGED_AND_RESTORED_FIXTURES:
        if name in names:
            return name
    info = getattr(item, "_fixtureinfo", None)  # pytest's own record of the fixtures a test resolves to
    defs = info.name2fixturedefs.values() if info is not None else ()
    if any(d and d[-1].scope == "module" for d in defs):
        return item.nodeid.split("::")[0]
    return None


@pytest.hookimpl(trylast=True)  # after -m has deselected what it deselects
def pytest_collection_modifyitems(config, items):
    if gpu_available():
        return
    skip = pytest.mark.skip(reason="no usable CUDA GPU (CuPy missing or no device)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
            _GPU_SKIPS.add(item.nodeid)


def pytest_sessionfinish(session):
    """In a pytest-xdist worker: hand this process's GPU counts to the controller, which prints them."""
    output = getattr(session.config, "workeroutput", None)
    if output is not None:
        output["gpu_skips"], output["standin_runs"] = sorted(_GPU_SKIPS), sorted(_STANDIN_RUNS)


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook: the controller gathers what its workers counted
def pytest_testnodedown(node, error):
    output = getattr(node, "workeroutput", {})
    _GPU_SKIPS.update(output.get("gpu_skips", ()))
    _STANDIN_RUNS.update(output.get("standin_runs", ()))


def pytest_terminal_summary(terminalreporter):
    if _STANDIN_RUNS:
        terminalreporter.write_line(
            f"GPU: {len(_STANDIN_RUNS)} tests ran the CuPy code path on the stand-in (tests/cupy_standin.py: "
            "NumPy underneath, CuPy's rules on top); cuFFT rounding, memory and speed need a real GPU.")
    if gpu_available():
        terminalreporter.write_line("GPU: CuPy backend usable; gpu-marked tests ran.")
    elif _GPU_SKIPS:
        terminalreporter.write_line(
            f"GPU: {len(_GPU_SKIPS)} tests marked 'gpu' were skipped: no usable CUDA GPU here. "
            "Run `make test` on a machine with CuPy and a GPU to exercise the CuPy backend."
        )


@pytest.fixture
def cupy_standin(monkeypatch, request):
    """Make ``cupy`` the stand-in (tests/cupy_standin.py) and the backend named ``cupy`` run on it."""
    import cupy_standin

    from phasefeat import backend

    monkeypatch.setitem(sys.modules, "cupy", cupy_standin.module)
    monkeypatch.setattr(backend, "_cupy_backend_or_reason", cupy_standin.backend)
    _STANDIN_RUNS.add(request.node.nodeid)
    return cupy_standin.module


@pytest.fixture(params=["cupy-standin", pytest.param("cupy", marks=pytest.mark.gpu)])
def cupy_module(request):
    """The CuPy code path: on the stand-in (everywhere), and on a real GPU (``gpu``-marked).

    Returns the ``cupy`` module of that case; ``backend="cupy"`` then computes there.
    """
    if request.param == "cupy-standin":
        return request.getfixturevalue("cupy_standin")
    import cupy

    return cupy


@pytest.fixture(params=["numpy", "cupy-standin", pytest.param("cupy", marks=pytest.mark.gpu)])
def backend_name(request):
    """Each backend in turn: NumPy, the CuPy code path on the stand-in, and CuPy on a real GPU.

    Returns the name to pass as ``backend=`` (``"cupy"`` for the stand-in too).
    """
    if request.param == "cupy-standin":
        request.getfixturevalue("cupy_standin")
        return "cupy"
    return request.param


PRESET_NAMES = ("qi2021", "kovesi", "assd_lpe")


@pytest.fixture(params=PRESET_NAMES)
def preset(request):
    """Each named parameter preset in turn (spec section 5 must hold for every one)."""
    from phasefeat import PhaseParams

    return PhaseParams.preset(request.param)


def real_image_paths() -> list[Path]:
    if not REAL_DIR.is_dir():
        return []
    return sorted(p for p in REAL_DIR.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def load_real(path: Path, size: int = 299) -> np.ndarray:
    """A shared radiograph as float64 grey on a 0..255 scale, resized to ``size`` squared."""
    from phasefeat.io.imageio import read_image, resize

    return resize(read_image(path).pixels * 255, (size, size)).astype(np.float64)


@pytest.fixture(scope="session")
def real_images():
    """A few real radiographs (one per class), resized to 299x299; skip if absent."""
    paths = real_image_paths()
    if not paths:
        pytest.skip(f"real radiographs not found at {REAL_DIR}")
    by_class = {}
    for p in paths:
        by_class.setdefault(p.parent.name, p)
    return [load_real(p) for p in by_class.values()]


@pytest.fixture(scope="session")
def radiograph():
    """One radiograph-like image: a real one when available, else the phantom."""
    paths = real_image_paths()
    if paths:
        return load_real(paths[0])
    from phasefeat.tools.phantom import chest_phantom

    # On the real images' 0..255 scale: in [0, 1], a * I + b with a small gain and a unit offset
    # would round the input itself ~500x more coarsely than a real radiograph.
    return chest_phantom(299, seed=3, dtype="float64") * 255


@pytest.fixture(scope="session")
def store(tmp_path_factory):
    """A 32x32 store from the real radiographs (or generated phantoms where absent)."""
    from datasets import class_folder_dataset

    from phasefeat.io.convert import ConvertOptions, convert

    tmp = tmp_path_factory.mktemp("store")
    root = REAL_DIR
    if not real_image_paths():
        root = tmp / "raw"
        class_folder_dataset(root, per_class=20)
    path = tmp / "s.h5"
    convert(root, path, options=ConvertOptions(size=32, piece_size=32, features_at=32), backend="numpy",
            progress=False)
    return path


#: The settings of the ``grid`` fixture's ``trainer compare`` (its reruns reuse every run).
GRID_ARGS = ["--epochs", "2", "--width", "0.125", "--repeats", "2", "--batch-size", "16"]


@pytest.fixture(scope="session")
def grid(store, tmp_path_factory):
    """A finished 8-run grid (CXR/ENH x CCE/SCCE x 2 repeats) of ``store``, by ``trainer compare``."""
    pytest.importorskip("keras")
    from click.testing import CliRunner

    from trainer.cli import cli

    out = tmp_path_factory.mktemp("grid")
    result = CliRunner().invoke(cli, ["compare", "--store", str(store), *GRID_ARGS, "--out", str(out)])
    assert result.exit_code == 0, result.output
    out.with_name(f"{out.name}-output.txt").write_text(result.output)
    return out
