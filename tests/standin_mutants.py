"""Re-run the mutants whose "equivalent" verdict rested on GPU tests, against the CuPy stand-in.

Each mutant is one textual change of today's module, applied in a copy of the repository; the
stand-in cases of the array-code tests run against it. Writes a JSON record.

    python tests/standin_mutants.py --out benchmarks/results/mutation/standin-reexamination.json
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TESTS = ["tests/test_enhance.py", "tests/test_monogenic.py", "tests/test_backend.py", "tests/test_cupy_path.py"]
SELECT = "standin or cupy_module"
FLAT = "flat = amplitude.max(axis=(-2, -1), keepdims=True) == 0"
FUSED = 'return cpu_kernels() if backend.name == "numpy" else None'
READ_ONLY = '    if backend_name == "numpy":'
MUTANTS = [
    ("phasefeat/maths/kirsch.py", READ_ONLY, '    if backend_name <= "numpy":'),
    ("phasefeat/maths/kirsch.py", READ_ONLY, '    if backend_name < "numpy":'),
    ("phasefeat/maths/kirsch.py", READ_ONLY, '    if backend_name >= "numpy":'),
    ("phasefeat/maths/filters.py", READ_ONLY, '    if backend_name <= "numpy":'),
    ("phasefeat/maths/filters.py", READ_ONLY, '    if backend_name >= "numpy":'),
    ("phasefeat/maths/monogenic.py", FUSED, FUSED.replace("==", "!=")),
    ("phasefeat/maths/monogenic.py", FUSED, FUSED.replace("==", "<")),
    ("phasefeat/maths/monogenic.py", FUSED, FUSED.replace("==", "<=")),
    ("phasefeat/maths/monogenic.py", FUSED, FUSED.replace("if backend.name ==", "if not backend.name ==")),
    ("phasefeat/maths/monogenic.py", FUSED, FUSED.replace("==", ">")),
    ("phasefeat/maths/monogenic.py", FUSED, FUSED.replace("==", ">=")),
    ("phasefeat/maths/features.py", FLAT, FLAT.replace("(-2, -1)", "(~2, -1)")),
    ("phasefeat/maths/features.py", FLAT, FLAT.replace("(-2, -1)", "(-2, - 0)")),
    ("phasefeat/maths/features.py", FLAT, FLAT.replace("(-2, -1)", "(- 3, -1)")),
    ("phasefeat/maths/features.py", FLAT, FLAT.replace("keepdims=True", "keepdims=False")),
    ("phasefeat/maths/features.py", FLAT, FLAT.replace("== 0", "<= 0")),
    # Not a recorded survivor: an implicit device-to-host transfer, which CuPy refuses.
    ("phasefeat/maths/features.py", FLAT, FLAT.replace("amplitude.max", '__import__("numpy").asarray(amplitude).max')),
]


def run(copy: Path) -> dict:
    import os

    # The copy lies elsewhere: point its tests at the real radiographs the checkout sees.
    real = Path(os.environ.get("PHASEFEAT_CXR_REAL", REPO.parent / "shared" / "data" / "cxr-real"))
    env = {**os.environ, **({"PHASEFEAT_CXR_REAL": str(real)} if real.is_dir() else {})}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS, "-k", SELECT],
                          cwd=copy, capture_output=True, text=True, env=env)
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-300:]
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (failed|passed|error)", last)}
    return {"exit": done.returncode, "summary": last, **counts}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "out" / "mutation" / "standin-reexamination.json")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "repo"
        shutil.copytree(REPO, copy, ignore=shutil.ignore_patterns(".venv", ".git", "out", "*.h5"))
        baseline = run(copy)
        if baseline["exit"] != 0:
            raise SystemExit(f"the unmutated tests fail: {baseline['summary']}")
        for path, old, new in MUTANTS:
            target = copy / path
            original = target.read_text()
            if original.count(old) != 1:
                raise SystemExit(f"{path}: the line to mutate is not there once: {old!r}")
            target.write_text(original.replace(old, new))
            result = run(copy)
            target.write_text(original)
            verdict = "killed" if result["exit"] != 0 else "survived"
            rows.append({"module": path, "from": old.strip(), "to": new.strip(), "verdict": verdict, **result})
            print(f"{verdict:8s} {path}: {new.strip()}  ({result['summary']})", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "tests": TESTS,
                                    "select": SELECT, "baseline": baseline, "mutants": rows}, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
