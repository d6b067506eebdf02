"""Mutation testing of the numeric modules with cosmic-ray: ``make mutate`` (slow; not part of CI).

Each module is mutated in a copy of the repository (never in the working tree) and its own
tests run against every mutant; a mutant the tests do not kill *survives*. The summary and
every survivor (operator, line, the changed code) go to ``out/mutation/``; docs/testing.md
says what the last run found and what was done about each survivor.

    python tests/mutation.py                       # every module below
    python tests/mutation.py phasefeat/maths/elea.py     # one module
    python tests/mutation.py --rerun out/mutation/summary.json   # only the last run's survivors,
                                                   # against today's tests (after adding tests)
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTEST = "python -m pytest -x -q -p no:cacheprovider -m 'not slow and not gpu'"
#: Module -> the tests that pin it (run against every mutant of that module).
MODULES = {
    "phasefeat/maths/elea.py": "tests/test_elea_reference.py tests/test_golden.py tests/test_elea.py tests/test_scaling.py",
    "phasefeat/maths/kirsch.py": "tests/test_elea_reference.py tests/test_elea.py",
    "phasefeat/maths/filters.py": "tests/test_filters.py tests/test_monogenic.py tests/test_crosscheck.py",
    "phasefeat/maths/monogenic.py": "tests/test_monogenic.py tests/test_crosscheck.py tests/test_golden.py",
    "phasefeat/maths/features.py": "tests/test_enhance.py tests/test_scaling.py tests/test_golden.py",
    "trainer/report.py": "tests/test_report_stats.py tests/test_report.py",
}


def run_module(copy: Path, module: str, tests: str, out: Path, timeout: float) -> dict:
    name = module.replace("/", "_").removesuffix(".py")
    config = out / f"{name}.toml"
    session = out / f"{name}.sqlite"
    config.write_text(
        "[cosmic-ray]\n"
        f'module-path = "{module}"\n'
        f"timeout = {timeout}\n"
        "excluded-modules = []\n"
        f'test-command = "{PYTEST} {tests}"\n'
        "[cosmic-ray.distributor]\n"
        'name = "local"\n')
    session.unlink(missing_ok=True)
    bin_dir = Path(sys.executable).parent
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "PYTHONPATH": str(copy), "MPLBACKEND": "Agg"}
    for step in (["init", str(config), str(session)], ["exec", str(config), str(session)]):
        subprocess.run([str(bin_dir / "cosmic-ray"), *step], cwd=copy, env=env, check=True)
    dump = subprocess.run([str(bin_dir / "cosmic-ray"), "dump", str(session)], cwd=copy, env=env,
                          check=True, capture_output=True, text=True).stdout
    survivors, total, killed = [], 0, 0
    for line in dump.splitlines():
        job, result = json.loads(line)
        if result is None:
            continue
        total += 1
        if result["test_outcome"] == "survived":
            mutation = job["mutations"][0]
            survivors.append({"operator": mutation["operator_name"], "occurrence": mutation["occurrence"],
                              "line": mutation["start_pos"][0], "diff": result.get("diff", "")})
        elif result["test_outcome"] == "killed":
            killed += 1
    return {"module": module, "tests": tests, "mutants": total, "killed": killed,
            "survived": len(survivors), "survivors": survivors}


def rerun_survivors(copy: Path, summary: list[dict], timeout: float) -> list[dict]:
    """Each survivor of an earlier run, mutated again and tested with the current tests.

    A mutant whose tests outrun ``timeout`` (an endless loop) counts as killed, as in a full run.
    """
    bin_dir = Path(sys.executable).parent
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "PYTHONPATH": str(copy), "MPLBACKEND": "Agg"}
    results = []
    for module in summary:
        if module["module"] not in MODULES:  # a run from before phasefeat's subpackages: same file name
            module = {**module, "module": next(m for m in MODULES if Path(m).name == Path(module["module"]).name)}
        still = []
        for survivor in module["survivors"]:
            command = [str(bin_dir / "cosmic-ray"), "mutate-and-test", module["module"], survivor["operator"],
                       str(survivor["occurrence"]), f"timeout -s KILL {timeout:.0f} {PYTEST} {MODULES[module['module']]}"]
            done = subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True)
            outcome = json.loads(done.stdout.strip().splitlines()[-1])["test_outcome"]
            if outcome == "survived":
                still.append(survivor)
        result = {**module, "tests": MODULES[module["module"]], "rerun_of": len(module["survivors"]),
                  "survived": len(still), "survivors": still}
        print(f"{module['module']}: {len(module['survivors'])} earlier survivors, {len(still)} survive "
              "today's tests", flush=True)
        results.append(result)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", default=list(MODULES), help="modules to mutate")
    parser.add_argument("--out", type=Path, default=REPO / "out" / "mutation")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per mutant's tests")
    parser.add_argument("--rerun", type=Path, metavar="SUMMARY",
                        help="re-test only the survivors listed in an earlier summary.json")
    args = parser.parse_args(argv)
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        parser.error(f"unknown module(s) {unknown}; known: {list(MODULES)}")
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "repo"
        shutil.copytree(REPO, copy, ignore=shutil.ignore_patterns(".venv", ".git", "out", "benchmarks/data",
                                                                   "__pycache__"))
        if args.rerun:
            results = rerun_survivors(copy, json.loads(args.rerun.read_text()), args.timeout)
        for module in [] if args.rerun else args.modules:
            result = run_module(copy, module, MODULES[module], args.out.resolve(), args.timeout)
            results.append(result)
            print(f"{module}: {result['mutants']} mutants, {result['killed']} killed, "
                  f"{result['survived']} survived", flush=True)
    name = "rerun.json" if args.rerun else "summary.json"
    (args.out / name).write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
