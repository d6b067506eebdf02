"""Mutation testing of the numeric modules with cosmic-ray: ``make mutate`` (slow; not part of CI).

Each module is mutated in a copy of the repository (never in the working tree) and its own
tests run against every mutant; a mutant the tests do not kill *survives*. The summary and
every survivor (operator, line, the changed code) go to ``out/mutation/``; docs/testing.md
says what the last run found and what was done about each survivor.

    python tests/mutation.py                       # every module below
    python tests/mutation.py phasefeat/maths/elea.py     # one module
    python tests/mutation.py --rerun out/mutation/summary.json   # only the last run's survivors,
                                                   # against today's tests (after adding tests)
    python tests/mutation.py MODULE --resume OLD.sqlite --out NEW/   # finish an interrupted (or
                                                   # earlier) run: its killed mutants are kept where
                                                   # the module still has them, the rest run now
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: The real radiographs the tests read (tests/conftest.py); generated data stands in without them.
REAL_DIR = Path(os.environ.get("PHASEFEAT_CXR_REAL", REPO.parent / "shared" / "data" / "cxr-real")).resolve()
PYTEST = "python -m pytest -x -q -p no:cacheprovider -m 'not slow and not gpu'"
#: Module -> the tests that pin it (run against every mutant of that module).
MODULES = {
    "phasefeat/maths/elea.py": "tests/test_elea_reference.py tests/test_golden.py tests/test_elea.py tests/test_scaling.py",
    "phasefeat/maths/kirsch.py": "tests/test_elea_reference.py tests/test_elea.py",
    "phasefeat/maths/filters.py": "tests/test_filters.py tests/test_monogenic.py tests/test_crosscheck.py",
    "phasefeat/maths/monogenic.py": "tests/test_monogenic.py tests/test_crosscheck.py tests/test_golden.py",
    "phasefeat/maths/features.py": "tests/test_enhance.py tests/test_scaling.py tests/test_golden.py",
    "trainer/report.py": "tests/test_report_stats.py tests/test_report.py",
    "phasefeat/maths/scaling.py": "tests/test_scaling.py tests/test_golden.py tests/test_elea.py",
    "trainer/splits.py": "tests/test_splits.py",
    "trainer/metrics.py": "tests/test_metrics.py",
    "trainer/losses.py": "tests/test_losses.py",
    "phasefeat/io/store.py": "tests/test_store.py",
    "trainer/experiment.py": "tests/test_experiment.py",
    "trainer/audit.py": "tests/test_audit_verdicts.py",
    "trainer/data.py": "tests/test_data.py",
    "phasefeat/io/progress.py": "tests/test_progress.py",
    "phasefeat/io/discover.py": "tests/test_discover.py tests/test_sources.py",
    "trainer/report_html.py": "tests/test_report_html.py",
    "trainer/report_summary.py": "tests/test_report_summary.py",
    "trainer/progress.py": "tests/test_training_progress.py",
    "trainer/checkpoint.py": "tests/test_checkpoint_state.py tests/test_checkpoint.py",
    "trainer/saved.py": "tests/test_saved.py",
    "trainer/report_figures.py": "tests/test_report_figures.py",
    "phasefeat/io/pieces.py": "tests/test_pieces.py tests/test_features_at.py",
    "phasefeat/io/assemble.py": "tests/test_assemble.py",
    "trainer/worker.py": "tests/test_worker.py",
    "trainer/grid.py": "tests/test_grid_plan.py",
    "trainer/cluster.py": "tests/test_cluster_runner.py",
    "phasefeat/io/convert.py": "tests/test_convert_steps.py",
}


def _environment(copy: Path) -> dict:
    bin_dir = Path(sys.executable).parent
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "PYTHONPATH": str(copy), "MPLBACKEND": "Agg"}
    if REAL_DIR.is_dir():  # the copy has no ../shared beside it: point its real-data tests at the radiographs
        env["PHASEFEAT_CXR_REAL"] = str(REAL_DIR)
    # One thread per test process: the mutants' tests are small, and two runs may share the cores.
    env.update({name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                       "NUMBA_NUM_THREADS")})
    return env


def _changed_lines(diff: str) -> list[str]:
    """The removed and added lines of a diff, without its headers and blank lines."""
    return [line.rstrip() for line in diff.splitlines()
            if line[:1] in "+-" and not line.startswith(("---", "+++")) and line[1:].strip()]


def _mutation_diff(source: str, operator_name: str, occurrence: int) -> str | None:
    """The diff one mutation makes to ``source``, or None where the operator has no such occurrence."""
    from cosmic_ray.mutating import mutate_code
    from cosmic_ray.plugins import get_operator

    mutated = mutate_code(source, get_operator(operator_name)(), occurrence)
    if mutated is None:
        return None
    return "\n".join(difflib.unified_diff(source.splitlines(), mutated.splitlines(), lineterm=""))


def keep_killed(old_session: Path, session: Path, module_source: str) -> int:
    """Copy the killed results of an earlier run of the same module into a fresh session.

    A result is kept where today's module has a mutation by the same operator that changes the
    same lines in the same way (wherever they moved), so lines edited since that run are mutated
    again. Survivors and unfinished mutants are left pending: they run against today's tests.
    Keeping a kill assumes the tests were only added to since that run.
    """
    killed = Counter()
    with sqlite3.connect(old_session) as old:
        for operator, diff in old.execute("SELECT s.operator_name, r.diff FROM mutation_specs s "
                                          "JOIN work_results r USING (job_id) WHERE r.test_outcome = 'KILLED'"):
            killed[(operator, tuple(_changed_lines(diff)))] += 1
    kept = 0
    with sqlite3.connect(session) as new:
        for job_id, operator, occurrence in new.execute(
                "SELECT job_id, operator_name, occurrence FROM mutation_specs").fetchall():
            diff = _mutation_diff(module_source, operator, occurrence)
            key = (operator, tuple(_changed_lines(diff or "")))
            if diff is None or not killed[key]:
                continue
            killed[key] -= 1
            new.execute("INSERT INTO work_results (worker_outcome, output, test_outcome, diff, job_id) "
                        "VALUES ('NORMAL', 'kept from an earlier run', 'KILLED', ?, ?)", (diff, job_id))
            kept += 1
    return kept


def time_unmutated(copy: Path, tests: str, env: dict) -> float:
    """Seconds the module's tests take on the unmutated copy; they must pass, or no mutant means anything."""
    start = time.perf_counter()
    done = subprocess.run(f"{PYTEST} {tests}", shell=True, cwd=copy, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the unmutated tests fail ({tests}):\n{done.stdout[-2000:]}")
    return time.perf_counter() - start


def run_module(copy: Path, module: str, tests: str, out: Path, timeout: float,
               resume: Path | None = None) -> dict:
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
    if resume is not None and resume == session:
        raise SystemExit(f"--resume {resume}: give the run another --out; this run starts a new session there")
    session.unlink(missing_ok=True)
    bin_dir = Path(sys.executable).parent
    env = _environment(copy)
    baseline = time_unmutated(copy, tests, env)
    print(f"{module}: unmutated tests pass in {baseline:.1f} s (timeout {timeout:.0f} s)", flush=True)
    subprocess.run([str(bin_dir / "cosmic-ray"), "init", str(config), str(session)], cwd=copy, env=env, check=True)
    kept = keep_killed(resume, session, (copy / module).read_text()) if resume else 0
    if resume:
        print(f"{module}: {kept} killed mutants kept from {resume}", flush=True)
    subprocess.run([str(bin_dir / "cosmic-ray"), "exec", str(config), str(session)], cwd=copy, env=env, check=True)
    dump = subprocess.run([str(bin_dir / "cosmic-ray"), "dump", str(session)], cwd=copy, env=env,
                          check=True, capture_output=True, text=True).stdout
    survivors, total, killed, timed_out = [], 0, 0, 0
    for line in dump.splitlines():
        job, result = json.loads(line)
        if result is None:
            continue
        total += 1
        timed_out += result.get("output") == "timeout"
        if result["test_outcome"] == "survived":
            mutation = job["mutations"][0]
            survivors.append({"operator": mutation["operator_name"], "occurrence": mutation["occurrence"],
                              "line": mutation["start_pos"][0], "diff": result.get("diff", "")})
        elif result["test_outcome"] == "killed":
            killed += 1
    return {"module": module, "tests": tests, "mutants": total, "killed": killed,
            "unmutated_tests_s": round(baseline, 1), "timeout_s": timeout, "timed_out": timed_out,
            "kept_from_earlier_run": kept, "survived": len(survivors), "survivors": survivors}


def find_occurrence(source: str, survivor: dict) -> int | None:
    """The occurrence of the survivor's operator that makes the same change in today's ``source``.

    A module edited since the run numbers its occurrences differently (a new ``0`` shifts every
    later number literal), so the recorded occurrence alone may name another mutation.
    """
    want = sorted(_changed_lines(survivor["diff"]))
    candidates, occurrence = [], 0
    while (diff := _mutation_diff(source, survivor["operator"], occurrence)) is not None:
        if sorted(_changed_lines(diff)) == want:
            candidates.append(occurrence)
        occurrence += 1
    # Identical changes on several lines (an annotation repeated): the nearest to the recorded one.
    return min(candidates, key=lambda k: abs(k - survivor["occurrence"])) if candidates else None


def rerun_survivors(copy: Path, summary: list[dict], timeout: float) -> list[dict]:
    """Each survivor of an earlier run, mutated again and tested with the current tests.

    A mutant whose tests outrun ``timeout`` (an endless loop) counts as killed, as in a full run.
    """
    bin_dir = Path(sys.executable).parent
    env = _environment(copy)
    results = []
    for module in summary:
        if module["module"] not in MODULES:  # a run from before phasefeat's subpackages: same file name
            module = {**module, "module": next(m for m in MODULES if Path(m).name == Path(module["module"]).name)}
        still, moved = [], 0
        source = (copy / module["module"]).read_text()
        for survivor in module["survivors"]:
            occurrence = find_occurrence(source, survivor)
            if occurrence is None:  # the mutated code is gone from today's module
                print(f"  line {survivor['line']} {survivor['operator']}: not in today's module", flush=True)
                continue
            moved += occurrence != survivor["occurrence"]
            survivor = {**survivor, "occurrence": occurrence}
            command = [str(bin_dir / "cosmic-ray"), "mutate-and-test", module["module"], survivor["operator"],
                       str(occurrence), f"timeout -s KILL {timeout:.0f} {PYTEST} {MODULES[module['module']]}"]
            done = subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True)
            try:
                outcome = json.loads(done.stdout.strip().splitlines()[-1])["test_outcome"]
            except (IndexError, ValueError, KeyError):  # cosmic-ray itself failed: nothing was tested
                outcome = "no outcome"
            if outcome != "killed":  # only a test that failed kills: an incompetent or failed try does not
                if outcome != "survived":
                    print(f"  line {survivor['line']} {survivor['operator']}: {outcome}, kept as a survivor",
                          flush=True)
                still.append(survivor)
        result = {**module, "tests": MODULES[module["module"]], "rerun_of": len(module["survivors"]),
                  "occurrences_moved": moved, "survived": len(still), "survivors": still}
        print(f"{module['module']}: {len(module['survivors'])} earlier survivors, {len(still)} survive "
              "today's tests", flush=True)
        results.append(result)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", default=list(MODULES), help="modules to mutate")
    parser.add_argument("--out", type=Path, default=REPO / "out" / "mutation")
    # A mutant that loops must not hold a run of 900 mutants for minutes; the summary records the
    # unmutated tests' time, so a timeout too close to it shows (trainer/report.py needs more).
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds per mutant's tests; a mutant that outruns it counts as killed")
    parser.add_argument("--rerun", type=Path, metavar="SUMMARY",
                        help="re-test only the survivors listed in an earlier summary.json")
    parser.add_argument("--resume", type=Path, metavar="SQLITE",
                        help="finish an interrupted or earlier run of one module: keep its killed mutants "
                             "that today's module still has, run the rest")
    args = parser.parse_args(argv)
    if args.resume and (len(args.modules) != 1 or not args.resume.is_file()):
        parser.error("--resume takes one module and the session file (.sqlite) of its interrupted run")
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
            result = run_module(copy, module, MODULES[module], args.out.resolve(), args.timeout,
                                args.resume.resolve() if args.resume else None)
            results.append(result)
            print(f"{module}: {result['mutants']} mutants, {result['killed']} killed, "
                  f"{result['survived']} survived", flush=True)
    name = "rerun.json" if args.rerun else "summary.json"
    (args.out / name).write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
