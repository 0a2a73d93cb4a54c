"""The ``coursekit`` command: the course's entry point for learners and instructors.

    coursekit info                 versions, the device computations run on, the isolation grading gets
    coursekit check NOTEBOOK       a learner's self-check: run the notebook's tests, exit 1 if any fails
    coursekit grade ASSIGNMENT     autograde every submission in the OS sandbox (instructors; at the course root)
    coursekit export               write reports/gradebook.csv for a learning-management system

Exit status: 0 when everything worked (``grade``: every submission was graded), 1 when ``check`` found a
failing test or ``grade`` could not grade some submissions (their rows say why), 2 for an error that stopped
the command (one line on stderr: not a course directory, an unknown assignment, no sandbox), 130 when
interrupted.
"""

from __future__ import annotations

import argparse
import sys

EXIT_OK, EXIT_SOME_FAILED, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130
NO_ISOLATION_WARNING = """\
WARNING: --no-isolation: submissions run with YOUR rights. Their code can read, change or delete any file you can
(the gradebook, solutions/, other students' work, coursekit itself), keep processes running after grading and use
the network. Every row of this run is marked isolation=none in grades.csv."""


def _info(args: argparse.Namespace) -> int:
    import torch

    import coursekit
    from coursekit.autograder.isolation import IsolationUnavailable, probe
    from coursekit.device import get_device

    print(f"coursekit {coursekit.__version__}")
    print(f"torch     {torch.__version__}")
    print(f"device    {get_device('auto')} (auto: CUDA, then MPS, then CPU)")
    try:
        print(f"isolation {probe().describe()}")
    except IsolationUnavailable as err:
        print(f"isolation NONE: coursekit grade will refuse to grade here: {err}")
    return EXIT_OK


def _check(args: argparse.Namespace) -> int:
    from coursekit.autograder.selfcheck import main as check_main

    return check_main(args.notebook)


def _grade(args: argparse.Namespace) -> int:
    from pathlib import Path

    from coursekit.autograder.batch import GradeSettings, Interrupted, grade_assignment
    from coursekit.autograder.reports import format_summary

    if args.no_isolation:
        print(NO_ISOLATION_WARNING, file=sys.stderr, flush=True)
    settings = GradeSettings(workers=args.workers, force=args.force, memory_mb=args.memory_mb,
                             max_processes=args.max_processes, cell_timeout_s=args.cell_timeout, notebook_timeout_s=args.notebook_timeout,
                             isolated=not args.no_isolation)
    try:
        rows = grade_assignment(Path.cwd(), args.assignment, settings)
    except Interrupted as err:
        print(f"coursekit grade: {err}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if not rows:
        print(f"No submissions found in submitted/<student>/{args.assignment}/.")
        return EXIT_OK
    print(format_summary(rows))
    print(f"Grades: reports/{args.assignment}/grades.csv   Feedback: feedback/<student>/{args.assignment}/")
    if args.no_isolation:
        print(NO_ISOLATION_WARNING.splitlines()[0], file=sys.stderr)
    return EXIT_SOME_FAILED if any(r.status == "failed" for r in rows) else EXIT_OK


def _export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from coursekit.autograder.nbgrader_io import find_course
    from coursekit.autograder.reports import export_gradebook

    course = find_course(Path.cwd())
    rows = export_gradebook(course, course / args.output)
    print(f"Wrote {args.output}: {len(rows)} students.")
    return EXIT_OK


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    import coursekit

    parser = argparse.ArgumentParser(prog="coursekit", description="Attention Mechanisms and Transformers: course tools.",
                                     epilog="Exit status: 0 all done; 1 some tests failed (check) or some submissions "
                                            "could not be graded (grade); 2 an error stopped the command; 130 interrupted.")
    parser.add_argument("--version", action="version", version=f"coursekit {coursekit.__version__}")
    parser.add_argument("--traceback", action="store_true", help="on an error, show the full traceback")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    info = sub.add_parser("info", help="print versions, the device, and the isolation grading gets on this machine")
    info.set_defaults(func=_info)
    check = sub.add_parser("check", help="run a graded notebook's tests on a copy; exit 1 if any fails or was changed")
    check.add_argument("notebook", help="path of your notebook, e.g. exercises/sdpa/sdpa.ipynb")
    check.set_defaults(func=_check)
    grade = sub.add_parser("grade", help="autograde every submission of an assignment (run at the course root)",
                           description="Autograde every submission in submitted/<student>/ASSIGNMENT/, each in an OS "
                                       "sandbox (bubblewrap). Exit status 1 when some could not be graded.")
    grade.add_argument("assignment", help="assignment name, e.g. sdpa")
    grade.add_argument("--workers", type=_positive, default=1, help="parallel grading processes (default 1)")
    grade.add_argument("--force", action="store_true", help="regrade every submission, changed or not")
    grade.add_argument("--memory-mb", type=_positive, default=4096,
                       help="memory each process of a submission may use (default 4096)")
    grade.add_argument("--max-processes", type=_positive, default=256,
                       help="processes and threads a submission may run at once (default 256)")
    grade.add_argument("--cell-timeout", type=float, default=120.0, help="seconds per cell (default 120)")
    grade.add_argument("--notebook-timeout", type=float, default=600.0, help="seconds per notebook (default 600)")
    grade.add_argument("--no-isolation", action="store_true",
                       help="grade even where no sandbox can be made: submissions run with your rights (dangerous; "
                            "every row is marked)")
    grade.set_defaults(func=_grade)
    export = sub.add_parser("export", help="write one CSV of every student's points per assignment, for an LMS")
    export.add_argument("--output", default="reports/gradebook.csv", help="where to write (default reports/gradebook.csv)")
    export.set_defaults(func=_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    from coursekit.autograder.isolation import IsolationUnavailable
    from coursekit.autograder.nbgrader_io import CourseError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"coursekit {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (CourseError, IsolationUnavailable) as err:
        print(f"coursekit {args.command}: {err}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as err:  # noqa: BLE001 (one line for the user; --traceback for a bug report)
        if args.traceback:
            raise
        print(f"coursekit {args.command}: {type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''} "
              "(run again with --traceback to see where)", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
