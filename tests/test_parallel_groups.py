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
