"""The ``coursekit`` command: the course's entry point for learners and instructors.

    coursekit info                 versions and the device computations will run on
    coursekit check NOTEBOOK       a learner's self-check: run the notebook's tests, exit 1 if any fails
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coursekit", description="Attention Mechanisms and Transformers: course tools.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    info = sub.add_parser("info", help="print versions and the device computations will run on")
    info.set_defaults(func=_info)
    check = sub.add_parser("check", help="run a graded notebook's tests on a copy; exit 1 if any fails or was changed")
    check.add_argument("notebook", help="path of your notebook, e.g. exercises/sdpa/sdpa.ipynb")
    check.set_defaults(func=_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
