"""Grading throughput: `coursekit grade` (1 and 2 workers, in the OS sandbox) against plain `nbgrader autograde`,
same cohort, and what the sandbox costs to start.

    .venv/bin/python benchmarks/bench_grade.py [--students 30] [--starts 5]

Builds a synthetic cohort in a temporary course directory (a mix of correct, partly wrong and blank
submissions of the sdpa assignment), grades it three ways in one process, and prints notebooks per
minute and the ratios. Each way starts from an empty gradebook so none reuses another's work. Then it
starts the learner's process pair by pair with and without bubblewrap (each start runs one cell that
imports torch, as every notebook does) and prints the medians: what isolation adds per notebook.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from coursekit.autograder.batch import GradeSettings, grade_assignment
from coursekit.autograder.execute import CheckedSandbox, Limits
from coursekit.autograder.isolation import NO_ISOLATION, probe
from coursekit.autograder.nbgrader_io import read_results, run_nbgrader

ROOT = Path(__file__).resolve().parents[1]


def make_cohort(course: Path, students: int) -> None:
    sys.path.insert(0, str(ROOT))
    from tests.helpers import SDPA_SUBMISSIONS

    release = json.loads((ROOT / "exercises" / "sdpa" / "sdpa.ipynb").read_text())
    kinds = ["reference", "unscaled", "inverted-masks", None]  # None: the untouched release
    for i in range(students):
        nb = json.loads(json.dumps(release))
        kind = kinds[i % len(kinds)]
        for cell in nb["cells"]:
            if kind and cell["metadata"].get("nbgrader", {}).get("grade_id") == "sdpa-answer":
                cell["source"] = SDPA_SUBMISSIONS[kind]
        folder = course / "submitted" / f"student{i:03d}" / "sdpa"
        folder.mkdir(parents=True)
        (folder / "sdpa.ipynb").write_text(json.dumps(nb))


def fresh_course(base: Path, name: str, students: int) -> Path:
    course = base / name
    course.mkdir()
    shutil.copy(ROOT / "nbgrader_config.py", course)
    shutil.copytree(ROOT / "solutions", course / "solutions")
    make_cohort(course, students)
    return course


def start_seconds(folder: Path, isolated: bool) -> float:
    """Wall time from nothing to a learner's process that has run ``import torch`` (as every notebook's first cell)."""
    start = time.perf_counter()
    with CheckedSandbox(str(folder), Limits(), isolation=probe() if isolated else NO_ISOLATION) as sandbox:
        sandbox.run_cell("import torch")
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=30)
    parser.add_argument("--starts", type=int, default=5, help="pairs of sandbox starts to time")
    args = parser.parse_args()
    print(f"Isolation: {probe().describe()}")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        course = fresh_course(base, "plain", args.students)
        start = time.perf_counter()
        run_nbgrader(course, "generate_assignment", "sdpa", "--force")
        run_nbgrader(course, "autograde", "sdpa", "--force")
        results["nbgrader autograde (1 process)"] = (time.perf_counter() - start,
                                                     sorted(r.score for r in read_results(course, "sdpa")))
        for workers in (1, 2):
            course = fresh_course(base, f"coursekit{workers}", args.students)
            start = time.perf_counter()
            rows = grade_assignment(course, "sdpa", GradeSettings(workers=workers, progress=True))
            results[f"coursekit grade --workers {workers}"] = (time.perf_counter() - start, sorted(r.score for r in rows))
        folder = base / "starts"
        folder.mkdir()
        starts = {True: [], False: []}
        for _ in range(args.starts):
            for isolated in (True, False):
                starts[isolated].append(start_seconds(folder, isolated))

    baseline = results["nbgrader autograde (1 process)"][0]
    print(f"\nCohort: {args.students} submissions of 'sdpa' (correct, unscaled, inverted masks, blank)")
    print(f"{'grader':<34} {'seconds':>8} {'notebooks/min':>14} {'vs nbgrader':>12}")
    for name, (seconds, _) in results.items():
        print(f"{name:<34} {seconds:8.1f} {60 * args.students / seconds:14.1f} {baseline / seconds:11.2f}x")
    scores = {name: s for name, (_, s) in results.items()}
    print(f"Same scores from all three: {len({tuple(s) for s in scores.values()}) == 1}")
    isolated, plain = statistics.median(starts[True]), statistics.median(starts[False])
    print(f"\nStarting the learner's process and importing torch, median of {args.starts} pairs:")
    print(f"  in the sandbox (bwrap) {isolated:6.2f} s   without isolation {plain:6.2f} s   "
          f"sandbox adds {isolated - plain:+.2f} s per notebook")


if __name__ == "__main__":
    main()
