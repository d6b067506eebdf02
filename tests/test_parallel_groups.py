"""The suite in several processes (pytest-xdist): what must stay together is given one group."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_PRINT_GROUPS = '''
import json


def pytest_collection_finish(session):
    groups = {}
    for item in session.items:
        mark = item.get_closest_marker("xdist_group")
        groups[item.nodeid] = [mark.args[0] if mark else None, sorted(item.fixturenames)]
    print("GROUPS" + json.dumps(groups))
'''


def test_tests_that_share_a_changed_or_a_module_fixture_get_one_group(tmp_path):
    """Every test of the ``grid`` fixture (some delete a run and train it again) in one group, across files;
    a module's tests that use its module-scoped fixture in that module's group; the rest in none."""
    (tmp_path / "print_groups.py").write_text(_PRINT_GROUPS)
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "print_groups",
                           "-p", "no:cacheprovider", "tests/test_grid.py", "tests/test_identity.py"],
                          cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    groups = json.loads(done.stdout.split("GROUPS", 1)[1].splitlines()[0])
    grid = {n for n, (g, f) in groups.items() if "grid" in f}
    reference = {n for n, (g, f) in groups.items() if "reference" in f}
    assert len(grid) >= 3 and {n.split("::")[0] for n in grid} == {"tests/test_identity.py"}
    assert all(groups[n][0] == "grid" for n in grid)
    assert len(reference) >= 3 and all(groups[n][0] == "tests/test_grid.py" for n in reference)
    rest = set(groups) - grid - reference
    assert rest and all(groups[n][0] is None for n in rest)


_GROUPED_SUITE = '''
import os
import time

import pytest


@pytest.mark.parametrize("k", range(8))
def test_grouped(k):
    time.sleep(0.1)
    with open(os.path.join(os.environ["GROUPS_OUT"], f"grouped-{k}"), "w") as handle:
        handle.write(os.environ["PYTEST_XDIST_WORKER"])


@pytest.mark.parametrize("k", range(8))
def test_free(k):
    time.sleep(0.1)
'''

_GROUPED_CONFTEST = '''
import pytest


def pytest_itemcollected(item):  # as tests/conftest.py gives its groups: a mark added at collection
    if item.name.startswith("test_grouped"):
        item.add_marker(pytest.mark.xdist_group("together"))
'''


def test_the_installed_pytest_xdist_keeps_a_group_in_one_process(tmp_path):
    """pytest 9.2 with pytest-xdist 3.8 ignored every group (each process built the grid fixture anew);
    the installed pair must send a group's tests to one process."""
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "conftest.py").write_text(_GROUPED_CONFTEST)
    (suite / "test_grouped.py").write_text(_GROUPED_SUITE)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2", "--dist",
                           "loadgroup", str(suite)], cwd=suite, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "GROUPS_OUT": str(tmp_path)})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    ran = [p.read_text() for p in tmp_path.glob("grouped-*")]
    assert len(ran) == 8 and len(set(ran)) == 1, ran
