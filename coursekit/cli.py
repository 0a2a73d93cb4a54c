"""The ``coursekit`` command: the course's entry point for learners and instructors.

    coursekit info                 versions and the device computations will run on
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coursekit", description="Attention Mechanisms and Transformers: course tools.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    info = sub.add_parser("info", help="print versions and the device computations will run on")
    info.set_defaults(func=_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
