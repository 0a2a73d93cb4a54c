"""The ``coursekit`` command: the course's entry point for learners and instructors.

    coursekit info                 versions and the device computations will run on
    coursekit check NOTEBOOK       a learner's self-check: run the notebook's tests, exit 1 if any fails
    coursekit grade ASSIGNMENT     autograde every submission (instructors; run at the course root)
    coursekit export               write reports/gradebook.csv for a learning-management system
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
    from coursekit.selfcheck import main as check_main

    return check_main(args.notebook)


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
    print(format_summary(rows))
    print(f"Grades: reports/{args.assignment}/grades.csv   Feedback: feedback/<student>/{args.assignment}/")
    return 0


def _export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from coursekit.autograde import export_gradebook

    rows = export_gradebook(Path.cwd(), Path(args.output))
    print(f"Wrote {args.output}: {len(rows)} students.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coursekit", description="Attention Mechanisms and Transformers: course tools.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    info = sub.add_parser("info", help="print versions and the device computations will run on")
    info.set_defaults(func=_info)
    check = sub.add_parser("check", help="run a graded notebook's tests on a copy; exit 1 if any fails or was changed")
    check.add_argument("notebook", help="path of your notebook, e.g. exercises/sdpa/sdpa.ipynb")
    check.set_defaults(func=_check)
    grade = sub.add_parser("grade", help="autograde every submission of an assignment (run at the course root)")
    grade.add_argument("assignment", help="assignment name, e.g. sdpa")
    grade.add_argument("--workers", type=int, default=1, help="parallel grading processes (default 1)")
    grade.add_argument("--force", action="store_true", help="regrade every submission, changed or not")
    grade.add_argument("--memory-mb", type=int, default=4096, help="memory a submission may use (default 4096)")
    grade.add_argument("--cell-timeout", type=float, default=120.0, help="seconds per cell (default 120)")
    grade.add_argument("--notebook-timeout", type=float, default=600.0, help="seconds per notebook (default 600)")
    grade.set_defaults(func=_grade)
    export = sub.add_parser("export", help="write one CSV of every student's points per assignment, for an LMS")
    export.add_argument("--output", default="reports/gradebook.csv", help="where to write (default reports/gradebook.csv)")
    export.set_defaults(func=_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
