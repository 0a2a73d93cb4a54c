"""The ``coursekit`` command: the course's entry point for learners and instructors.

Learners:
    coursekit start [ASSIGNMENT ...]          copy releases into work/, never over your own files
    coursekit check [NOTEBOOK]                one notebook's tests (exit 1 if any fails); no NOTEBOOK: progress
                                              across every notebook in work/
    coursekit handin ASSIGNMENT --student ID  pack work/ASSIGNMENT into a zip to send to your instructor
    coursekit info                            versions and the device computations will run on

Instructors (at the course root):
    coursekit bundle                          the learners' bundle: releases, coursekit wheel, lock, book
    coursekit collect ASSIGNMENT ZIP|DIR ...  hand-in zips into submitted/ (through nbgrader collect)
    coursekit grade ASSIGNMENT                autograde every submission
    coursekit feedback ASSIGNMENT             feedback pages, after the written answers are graded by hand
    coursekit report ASSIGNMENT               the cohort on one offline page: scores, tests, commonest mistakes
    coursekit export                          write reports/gradebook.csv for a learning-management system
"""

from __future__ import annotations

import argparse
import sys


def _info(args: argparse.Namespace) -> int:
    import torch

    import coursekit
    from coursekit.device import get_device

    print(f"coursekit {coursekit.__version__}")
    print(f"torch     {torch.__version__}")
    print(f"device    {get_device('auto')} (auto: CUDA, then MPS, then CPU)")
    return 0


def _check(args: argparse.Namespace) -> int:
    if args.notebook:
        from coursekit.selfcheck import main as check_main

        return check_main(args.notebook)
    from coursekit.learner import format_progress, progress, require_workspace

    workspace = require_workspace()
    rows = progress(workspace)
    print(format_progress(workspace, rows))
    return 0 if rows and all(r.ok for r in rows) else 1


def _start(args: argparse.Namespace) -> int:
    from coursekit.learner import require_workspace, start

    for line in start(require_workspace(), args.assignments or None):
        print(line)
    print("Open JupyterLab (`jupyter lab`) and work in work/<assignment>/; `coursekit check` shows your progress.")
    return 0


def _handin(args: argparse.Namespace) -> int:
    from coursekit.learner import handin, require_workspace

    path, warnings = handin(require_workspace(), args.assignment, args.student)
    for warning in warnings:
        print(f"warning: {warning}")
    print(f"Packed {path}\nSend this file to your instructor. Handing in again later is fine: the latest counts.")
    return 0


def _bundle(args: argparse.Namespace) -> int:
    from pathlib import Path

    from coursekit.bundle import make_bundle

    book = None if args.no_book else Path(args.book) if args.book else Path("_build/html")
    if book is not None and not args.book and not (book / "index.html").exists():
        print("No built book in _build/html (run `make book` to include it); bundling without it.")
        book = None
    archive = make_bundle(Path.cwd(), Path(args.output), book)
    print(f"Wrote {archive} and {archive.with_suffix('')}/ (no solutions, no hidden tests).")
    return 0


def _collect(args: argparse.Namespace) -> int:
    from pathlib import Path

    from coursekit.collect import collect_handins, format_collected

    results = collect_handins(Path.cwd(), args.assignment, [Path(p) for p in args.paths])
    print(format_collected(results))
    print(f"Submissions are in submitted/<student>/{args.assignment}/; grade them with `coursekit grade {args.assignment}`.")
    return 0


def _grade(args: argparse.Namespace) -> int:
    from pathlib import Path

    from coursekit.autograde import GradeSettings, format_summary, grade_assignment

    settings = GradeSettings(workers=args.workers, force=args.force, memory_mb=args.memory_mb,
                             cell_timeout_s=args.cell_timeout, notebook_timeout_s=args.notebook_timeout)
    try:
        rows = grade_assignment(Path.cwd(), args.assignment, settings)
    except FileNotFoundError as err:
        print(f"coursekit grade: {err}", file=sys.stderr)
        return 2
    if not rows:
        print(f"No submissions found in submitted/<student>/{args.assignment}/.")
        return 0
    from coursekit.cohort import record_tests
    from coursekit.notgraded import mark_not_graded

    record_tests(Path.cwd(), args.assignment, rows)
    flagged = mark_not_graded(Path.cwd(), args.assignment, rows)
    print(format_summary(rows))
    print(f"Grades: reports/{args.assignment}/grades.csv (each test: tests.csv)." +
          (f" {flagged} notebooks that could not be graded are flagged in the formgrader." if flagged else ""))
    print(f"Next: grade written answers in the formgrader, then `coursekit feedback {args.assignment}`; "
          f"`coursekit report {args.assignment}` shows the cohort.")
    return 0


def _export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from coursekit.autograde import export_gradebook

    rows = export_gradebook(Path.cwd(), Path(args.output))
    print(f"Wrote {args.output}: {len(rows)} students.")
    return 0


def _feedback(args: argparse.Namespace) -> int:
    from pathlib import Path

    from coursekit.feedback import generate_feedback

    try:
        pages = generate_feedback(Path.cwd(), args.assignment, pending_ok=args.pending_ok)
    except RuntimeError as err:
        print(f"coursekit feedback: {err}", file=sys.stderr)
        return 1
    print(f"Wrote {len(pages)} feedback pages in feedback/<student>/{args.assignment}/ (offline; no hidden tests). "
          "Send each learner their folder, or `nbgrader release_feedback` on a hub.")
    return 0


def _report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from coursekit.cohort import write_report

    page = write_report(Path.cwd(), args.assignment)
    print(f"Wrote {page.relative_to(Path.cwd())}: open it in a browser (it works offline).")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coursekit", description="Attention Mechanisms and Transformers: course tools.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    info = sub.add_parser("info", help="print versions and the device computations will run on")
    info.set_defaults(func=_info)
    start = sub.add_parser("start", help="copy assignments' releases into work/ (never over your own files)")
    start.add_argument("assignments", nargs="*", metavar="ASSIGNMENT", help="e.g. sdpa (default: all)")
    start.set_defaults(func=_start)
    check = sub.add_parser("check", help="run a graded notebook's tests on a copy; exit 1 if any fails or was changed")
    check.add_argument("notebook", nargs="?", help="path of your notebook, e.g. work/sdpa/sdpa.ipynb "
                       "(default: progress across every notebook in work/)")
    check.set_defaults(func=_check)
    handin = sub.add_parser("handin", help="pack your work on an assignment into a zip for your instructor")
    handin.add_argument("assignment", help="e.g. sdpa")
    handin.add_argument("--student", required=True, help="your student id, as your instructor gave it")
    handin.set_defaults(func=_handin)
    bundle = sub.add_parser("bundle", help="make the learners' bundle: releases, coursekit wheel, lock, book")
    bundle.add_argument("--output", default="dist", help="folder to write it in (default dist)")
    bundle.add_argument("--book", help="built book to include (default _build/html, when built)")
    bundle.add_argument("--no-book", action="store_true", help="leave the book out")
    bundle.set_defaults(func=_bundle)
    collect = sub.add_parser("collect", help="collect learners' hand-in zips into submitted/ (run at the course root)")
    collect.add_argument("assignment", help="assignment name, e.g. sdpa")
    collect.add_argument("paths", nargs="+", metavar="ZIP_OR_DIR", help="hand-in zips, or folders holding them")
    collect.set_defaults(func=_collect)
    grade = sub.add_parser("grade", help="autograde every submission of an assignment (run at the course root)")
    grade.add_argument("assignment", help="assignment name, e.g. sdpa")
    grade.add_argument("--workers", type=int, default=1, help="parallel grading processes (default 1)")
    grade.add_argument("--force", action="store_true", help="regrade every submission, changed or not")
    grade.add_argument("--memory-mb", type=int, default=4096, help="memory a submission may use (default 4096)")
    grade.add_argument("--cell-timeout", type=float, default=120.0, help="seconds per cell (default 120)")
    grade.add_argument("--notebook-timeout", type=float, default=600.0, help="seconds per notebook (default 600)")
    grade.set_defaults(func=_grade)
    feedback = sub.add_parser("feedback", help="write feedback pages, after written answers are graded by hand")
    feedback.add_argument("assignment", help="assignment name, e.g. sdpa")
    feedback.add_argument("--pending-ok", action="store_true", help="write them even while written answers are ungraded")
    feedback.set_defaults(func=_feedback)
    report = sub.add_parser("report", help="write reports/ASSIGNMENT/report.html: the cohort on one offline page")
    report.add_argument("assignment", help="assignment name, e.g. sdpa")
    report.set_defaults(func=_report)
    export = sub.add_parser("export", help="write one CSV of every student's points per assignment, for an LMS")
    export.add_argument("--output", default="reports/gradebook.csv", help="where to write (default reports/gradebook.csv)")
    export.set_defaults(func=_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    from coursekit.bundle import BundleError
    from coursekit.learner import LearnerError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (LearnerError, BundleError, FileNotFoundError) as err:
        print(f"coursekit {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
